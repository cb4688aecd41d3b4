/**
 * Data parallelism (parallel/): launch checks without MPI, then, when Open
 * MPI's mpirun is installed, two processes on the CPU adapter against one:
 * the MPI layer and gradient averaging on a synthetic store (bit-exact), a
 * tiny Based model trained for 3 steps with 2 × batch 4 against 1 × batch 8,
 * and train() end to end with trainer.devices=2.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { join } from "node:path";
import { BasedError } from "../../errors.ts";
import { parseSafetensors, tensorData } from "../../tensor/safetensors.ts";
import { DataParallel } from "../../parallel/data_parallel.ts";
import { detectLaunch } from "../../parallel/launch.ts";
import { Mpi, mpiLibraryCandidates } from "../../parallel/mpi.ts";
import { REPO } from "../helpers.ts";

const DRIVER = join(REPO, "tests/parallel/ddp_driver.ts");

async function hasMpirun(): Promise<boolean> {
  try {
    const r = await new Deno.Command("mpirun", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    return r.success && /Open MPI/i.test(new TextDecoder().decode(r.stdout));
  } catch {
    return false;
  }
}
const MPIRUN = await hasMpirun();
const NO_MPI =
  "skipped: Open MPI's mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)";

/** train/loop.ts imports modules other engineers are still writing: the end-to-end test waits for them. */
async function loopReady(): Promise<string | null> {
  try {
    // a computed specifier: loaded at run time, not part of this file's type-checked graph
    await import(new URL("../../train/loop.ts", import.meta.url).href);
    return null;
  } catch (e) {
    return `skipped: train/loop.ts does not load yet (${(e as Error).message.split("\n")[0]})`;
  }
}
const LOOP_SKIP = MPIRUN ? await loopReady() : NO_MPI;

/** Runs the driver under `mpirun -np n` (n > 1) or alone; returns combined output. */
async function runDriver(n: number, args: string[]): Promise<string> {
  const deno = [Deno.execPath(), "run", "-A", DRIVER, ...args];
  const cmd = n > 1
    ? ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", String(n), ...deno]
    : deno;
  const r = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    cwd: REPO,
    env: { DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "vulkan" },
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`${cmd.slice(0, 6).join(" ")} … failed:\n${text.slice(-4000)}`);
  return text;
}

async function readF32(path: string): Promise<Float32Array> {
  const b = await Deno.readFile(path);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

async function ls(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/**
 * Weights of the 2-process run against the 1-process run with the doubled
 * batch. The two sum the same per-token gradients in different orders (one
 * GEMM reduction over 2·B·L rows, against two over B·L added by MPI), so
 * gradients agree to a few f32 ulps (relative ~1e-7; the logged norms agree
 * to ~1e-6). AdamW then divides by √v̂ + eps: an element whose gradient is
 * itself at rounding-noise level can move by up to ~lr per step differently.
 * Hence: every element within steps·lr·0.1 (observed max 8.7e-6 with lr 3e-3),
 * 99.9 % of them within 1e-6 (observed 1.8e-7), and the difference's L2 norm
 * within 1e-4 of the L2 norm of the weights' change over the run.
 */
function assertWeightsMatch(
  what: string,
  got: Float32Array,
  ref: Float32Array,
  start: Float32Array,
  lr: number,
  steps: number,
): void {
  assertEquals(got.length, ref.length, `${what}: sizes`);
  let big = 0, maxAbs = 0, num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    if (!(d <= steps * lr * 0.1)) {
      throw new Error(`${what}: element ${i} differs by ${d} (> ${steps * lr * 0.1})`);
    }
    if (d > 1e-6) big++;
    maxAbs = Math.max(maxAbs, d);
    num += d * d;
    den += (ref[i] - start[i]) ** 2;
  }
  assert(big <= ref.length * 1e-3, `${what}: ${big} of ${ref.length} elements differ by > 1e-6`);
  const rel = Math.sqrt(num / den);
  assert(rel <= 1e-4, `${what}: |Δ|₂ / |update|₂ = ${rel}`);
}

// ------------------------------------------------------------------ without MPI

Deno.test("mpi: launch detection from Open MPI, PMI and PMIx variables", () => {
  assertEquals(detectLaunch({}), null);
  assertEquals(
    detectLaunch({
      OMPI_COMM_WORLD_SIZE: "4",
      OMPI_COMM_WORLD_RANK: "3",
      OMPI_COMM_WORLD_LOCAL_RANK: "1",
      OMPI_COMM_WORLD_LOCAL_SIZE: "2",
    }),
    { launcher: "openmpi", size: 4, rank: 3, localRank: 1, localSize: 2 },
  );
  assertEquals(
    detectLaunch({ PMI_SIZE: "2", PMI_RANK: "1", MPI_LOCALRANKID: "1", MPI_LOCALNRANKS: "2" }),
    { launcher: "pmi", size: 2, rank: 1, localRank: 1, localSize: 2 },
  );
  assertEquals(detectLaunch({ PMIX_RANK: "5", SLURM_STEP_NUM_TASKS: "8", SLURM_LOCALID: "1" }), {
    launcher: "pmix",
    size: 8,
    rank: 5,
    localRank: 1,
    localSize: 0,
  });
  let err: unknown;
  try {
    detectLaunch({ OMPI_COMM_WORLD_SIZE: "two" });
  } catch (e) {
    err = e;
  }
  assert(err instanceof BasedError && /OMPI_COMM_WORLD_SIZE/.test(err.message));
});

Deno.test("mpi: library candidates (BASED_MPI_LIB wins, then the sonames)", () => {
  assertEquals(mpiLibraryCandidates({ BASED_MPI_LIB: "/x/libmpi.so" }), ["/x/libmpi.so"]);
  const c = mpiLibraryCandidates({ OPAL_PREFIX: "/opt/ompi/", PATH: "" });
  assertEquals(c.slice(0, 2), ["libmpi.so.40", "libmpi.so"]);
  assert(c.includes("/opt/ompi/lib/libmpi.so.40"));
});

Deno.test("data parallel: launch checks give one-line errors", async () => {
  assertEquals(await DataParallel.init(1, { env: {} }), null);
  assertEquals(await DataParallel.init(1, { env: { OMPI_COMM_WORLD_SIZE: "1" } }), null);
  await rejects(DataParallel.init(2, { env: {} }), (e: Error) => {
    assertEquals(
      e.message,
      "trainer.devices=2 needs 2 processes: run `mpirun -np 2 ./based train ... trainer.devices=2`",
    );
    return e instanceof BasedError;
  });
  await rejects(
    DataParallel.init(2, { env: { OMPI_COMM_WORLD_SIZE: "3", OMPI_COMM_WORLD_RANK: "0" } }),
    /trainer.devices=2 but the MPI launcher started 3 processes: run `mpirun -np 2/,
  );
  await rejects(
    DataParallel.init(1, { env: { OMPI_COMM_WORLD_SIZE: "2", OMPI_COMM_WORLD_RANK: "0" } }),
    /trainer.devices=1, but mpirun started 2 processes \(set trainer.devices=2/,
  );
  await rejects(DataParallel.init(0, { env: {} }), /trainer.devices must be a positive integer/);
});

Deno.test("data parallel: trainer.devices=1 loads no MPI (runs without --allow-ffi)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = join(dir, "one.ts");
    const url = new URL("../../parallel/data_parallel.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { DataParallel } from ${JSON.stringify(url)};\n` +
        `const dp = await DataParallel.init(1);\nconsole.log(dp === null ? "null" : "dp");\n`,
    );
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-env", "--allow-read", script],
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "" },
    }).output();
    const out = new TextDecoder().decode(r.stdout).trim();
    assert(r.success, new TextDecoder().decode(r.stderr));
    assertEquals(out, "null");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "mpi: a missing or foreign library is a one-line BasedError",
  ignore: Deno.build.os !== "linux", // uses glibc's libc.so.6 as the foreign library
  fn: () => {
    const open = (lib: string) => {
      try {
        Mpi.open({ env: { BASED_MPI_LIB: lib } });
      } catch (e) {
        assert(e instanceof BasedError, String(e));
        assert(!e.message.includes("\n"), e.message);
        return e.message;
      }
      throw new Error(`${lib} loaded as MPI`);
    };
    assert(/^cannot load the MPI library \(BASED_MPI_LIB=\/nonexistent\/libmpi.so: /.test(
      open("/nonexistent/libmpi.so"),
    ));
    assert(/^libc.so.6 has no MPI_Init_thread/.test(open("libc.so.6")));
  },
});

// ------------------------------------------------------------------ two processes

Deno.test({
  name: "data parallel: MPI layer, broadcast and bucketed gradient mean on 2 ranks (mpirun)",
  ignore: !MPIRUN,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir();
    try {
      // the checks run on both ranks inside the driver (bit-exact for 2 ranks)
      await runDriver(2, ["primitives", out]);
      const r = JSON.parse(await Deno.readTextFile(join(out, "primitives.json")));
      assert(/Open MPI/.test(r.version), r.version);
      assert(r.chunks.length >= 4 && r.buckets > r.chunks.length);
      assertEquals(await ls(out), ["primitives.json"]);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
if (!MPIRUN) console.warn(`data parallel: ${NO_MPI}`);

Deno.test({
  name: "data parallel: tiny Based model, 2 ranks × batch 4 = 1 process × batch 8 for 3 steps",
  ignore: !MPIRUN,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir();
    const steps = 3, lr = 3e-3, batch = 4, acc = 2;
    try {
      await runDriver(2, [
        "model",
        join(out, "ddp"),
        "2",
        String(batch),
        String(acc),
        String(steps),
      ]);
      await runDriver(1, [
        "model",
        join(out, "one"),
        "1",
        String(2 * batch),
        String(acc),
        String(steps),
      ]);
      // rank 0 alone wrote (and the ranks ended bit-identical: assertInSync in the driver)
      assertEquals(await ls(join(out, "ddp")), ["result.json", "weights.f32", "weights0.f32"]);
      const ddp = JSON.parse(await Deno.readTextFile(join(out, "ddp", "result.json")));
      const one = JSON.parse(await Deno.readTextFile(join(out, "one", "result.json")));
      assertEquals([ddp.world, ddp.writer, one.world], [2, 0, 1]);
      assertEquals(ddp.names, one.names);
      // DistributedSampler layout: micro-batch k of rank r holds positions r, r+2, … of the
      // epoch order, so both ranks' k-th micro-batches together are the single run's k-th
      const per = steps * acc * batch;
      for (let k = 0; k < steps * acc; k++) {
        const r0 = ddp.samples.slice(k * batch, (k + 1) * batch);
        const r1 = ddp.samples.slice(per + k * batch, per + (k + 1) * batch);
        const single = one.samples.slice(k * 2 * batch, (k + 1) * 2 * batch);
        assertEquals(r0.flatMap((x: number, i: number) => [x, r1[i]]), single, `micro-batch ${k}`);
      }
      // losses (mean over ranks) and global gradient norms: reduction order only
      for (let s = 0; s < steps; s++) {
        assert(Math.abs(ddp.losses[s] - one.losses[s]) <= 1e-6 * one.losses[s], `loss ${s}`);
        assert(Math.abs(ddp.norms[s] - one.norms[s]) <= 1e-5 * one.norms[s], `norm ${s}`);
      }
      assertEquals(
        await readF32(join(out, "ddp", "weights0.f32")),
        await readF32(join(out, "one", "weights0.f32")),
      );
      assertWeightsMatch(
        "weights after 3 steps",
        await readF32(join(out, "ddp", "weights.f32")),
        await readF32(join(out, "one", "weights.f32")),
        await readF32(join(out, "one", "weights0.f32")),
        lr,
        steps,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

/** A tiny WikiText-format corpus (the three split files). */
async function tinyCorpus(dir: string): Promise<void> {
  const words = ["the", "ark", "of", "light", "and", "water", "over", "a", "land", "stone"];
  const text = (n: number, seed: number) => {
    const lines: string[] = [];
    let s = seed;
    for (let i = 0; i < n; i++) {
      const w: string[] = [];
      for (let j = 0; j < 12; j++) w.push(words[(s = (s * 1103515245 + 12345) >>> 0) % 10]);
      lines.push(` ${w.join(" ")} . \n`);
    }
    return lines.join("");
  };
  await Deno.writeTextFile(join(dir, "wiki.train.tokens"), text(120, 1));
  await Deno.writeTextFile(join(dir, "wiki.valid.tokens"), text(10, 2));
  await Deno.writeTextFile(join(dir, "wiki.test.tokens"), text(10, 3));
}

Deno.test({
  name: "data parallel: train() with trainer.devices=2 matches devices=1, rank 0 alone writes",
  ignore: LOOP_SKIP !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir();
    const steps = 3, batch = 1; // per rank; the LM head over GPT-2's vocabulary is slow on the CPU
    try {
      const data = join(out, "data");
      await Deno.mkdir(data);
      await tinyCorpus(data);
      const text = await runDriver(2, [
        "loop",
        join(out, "ddp"),
        "2",
        String(batch),
        data,
        String(steps),
      ]);
      // progress lines: printed by rank 0 only
      assertEquals(text.match(/step 1\/3 \|/g)?.length, 1, text);
      await runDriver(1, ["loop", join(out, "one"), "1", String(2 * batch), data, String(steps)]);
      // rank 0 alone logged and wrote: one log, one metrics line per step, one checkpoint
      assertEquals(await ls(join(out, "ddp")), ["checkpoints", "log.rank0.txt", "run"]);
      const metrics = (d: string) =>
        Deno.readTextFile(join(out, d, "run", "metrics.jsonl")).then((t) =>
          t.trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.split === "train")
        );
      const [md, m1] = [await metrics("ddp"), await metrics("one")];
      assertEquals(md.map((r) => r.step), [1, 2, 3]);
      for (let s = 0; s < steps; s++) {
        assert(Math.abs(md[s].loss - m1[s].loss) <= 1e-6 * m1[s].loss, `loss at step ${s + 1}`);
        assertEquals(md[s].tokens, m1[s].tokens, "tokens count both ranks");
      }
      const ck = async (d: string) => {
        const dirs = await ls(join(out, d, "checkpoints"));
        assertEquals(dirs, ["step_0000003"]);
        const f = parseSafetensors(
          await Deno.readFile(join(out, d, "checkpoints", dirs[0], "model.safetensors")),
        );
        return f;
      };
      const [fd, f1] = [await ck("ddp"), await ck("one")];
      for (const name of f1.tensors.keys()) {
        const a = tensorData(fd, name) as Float32Array, b = tensorData(f1, name) as Float32Array;
        // 3 steps of lr 3e-3: see assertWeightsMatch (here per tensor, start unknown: bound only)
        for (let i = 0; i < b.length; i++) {
          assert(Math.abs(a[i] - b[i]) <= steps * 3e-3 * 0.1, `${name}[${i}]`);
        }
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
if (LOOP_SKIP) console.warn(`data parallel end to end: ${LOOP_SKIP}`);
