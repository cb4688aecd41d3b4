/**
 * Crash-safe checkpoints (train/checkpoint.ts): round trip, interrupted
 * writes, corrupt checkpoints, pruning, replacing a step, unwritable
 * directories and a full disk. Every failing operation must leave what the
 * user had byte for byte as it was: the tests hash the tree before and after.
 *
 * Two cases need privileges and are skipped with the reason in their name
 * where they are missing: tmpfs mounts (read-only and full-disk cases; root
 * with CAP_SYS_ADMIN) and chmod 0500 (does not stop root, as in CI).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { BasedError } from "../../errors.ts";
import { readSafetensors } from "../../tensor/safetensors.ts";
import {
  type CheckpointData,
  checkpointName,
  ensureWritableDir,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  MARKER,
  saveCheckpoint,
} from "../../train/checkpoint.ts";
import { Rng } from "../helpers.ts";

const FILES = ["COMPLETE", "model.safetensors", "optimizer.safetensors", "state.json"];
const HINT_DIR = "set callbacks.model_checkpoint.dirpath to a writable directory";
/** a process id that is not ours, for leftovers of "another" (crashed) process */
const OTHER_PID = Deno.pid === 4242 ? 4243 : 4242;

// ------------------------------------------------------------------ helpers

/** A small checkpoint: weights and moments of `n`(even)-element tensors, deterministic in `seed`. */
function makeData(step: number, seed = step, n = 6): CheckpointData {
  const r = new Rng(seed);
  const f = (k: number) => Float32Array.from(r.randn(k));
  return {
    weights: new Map([["layers.0.mixer.weight", f(n)], ["ln_f.weight", f(3)]]),
    optimizer: new Map([
      ["exp_avg.layers.0.mixer.weight", f(n)],
      ["exp_avg_sq.layers.0.mixer.weight", f(n)],
    ]),
    state: {
      step,
      tokens: step * 256,
      optimizer: { step },
      data: { epoch: 0, position: step * 2, seed },
      config: { optimizer: { lr: 1e-3 }, nested: [1, "two", null] },
    },
  };
}

function shapesOf(n = 6): Map<string, number[]> {
  return new Map([
    ["layers.0.mixer.weight", [2, n / 2]],
    ["exp_avg.layers.0.mixer.weight", [2, n / 2]],
    ["exp_avg_sq.layers.0.mixer.weight", [2, n / 2]],
  ]);
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function assertSameData(got: CheckpointData, want: CheckpointData, what = ""): void {
  for (const key of ["weights", "optimizer"] as const) {
    assertEquals([...got[key].keys()], [...want[key].keys()], `${what} ${key} names`);
    for (const [name, v] of want[key]) {
      assertEquals(bytesOf(got[key].get(name)!), bytesOf(v), `${what} ${key} ${name}: bit-exact`);
    }
  }
  assertEquals(got.state, want.state, `${what} state`);
}

/** Every file and directory under `dir` (relative path -> sha-256 of the contents, or "dir/"). */
async function hashTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    const entries = [...Deno.readDirSync(join(dir, rel))].sort((a, b) => a.name < b.name ? -1 : 1);
    for (const e of entries) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        out[`${p}/`] = "dir/";
        await walk(p);
      } else {
        const h = await crypto.subtle.digest("SHA-256", await Deno.readFile(join(dir, p)));
        out[p] = [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
      }
    }
  };
  await walk("");
  return out;
}

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "based-checkpoint-test-" });
  try {
    await fn(root);
  } finally {
    await Deno.chmod(root, 0o700).catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
}

/** Awaits a refusal: a one-line BasedError containing every piece of `parts`. */
async function refused(p: Promise<unknown>, ...parts: string[]): Promise<BasedError> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert(err instanceof BasedError, `expected a BasedError, got ${err}`);
  assert(!/[\r\n]/.test(err.message), `not one line: ${JSON.stringify(err.message)}`);
  for (const part of parts) assert(err.message.includes(part), `'${part}' not in: ${err.message}`);
  return err;
}

function collector(): { lines: string[]; warn: (s: string) => void } {
  const lines: string[] = [];
  return { lines, warn: (s: string) => lines.push(s) };
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

// ---------------------------------------------------- privileges for some cases

async function sh(cmd: string, ...args: string[]): Promise<{ ok: boolean; err: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
    return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim().split("\n")[0] };
  } catch (e) {
    return { ok: false, err: (e as Error).message.split("\n")[0] };
  }
}

/** null when `mount -t tmpfs` works here, otherwise why not. */
async function probeMount(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "tmpfs mounts need Linux";
  const dir = await Deno.makeTempDir({ prefix: "based-mount-probe-" });
  try {
    const m = await sh("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir);
    if (!m.ok) return `mount -t tmpfs is not permitted here (${m.err || "failed"})`;
    await sh("umount", dir);
    return null;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** null when chmod 0500 stops this user from writing, otherwise why not. */
async function probeChmod(): Promise<string | null> {
  if (Deno.build.os === "windows") return "no POSIX permissions on Windows";
  const dir = await Deno.makeTempDir({ prefix: "based-chmod-probe-" });
  try {
    await Deno.chmod(dir, 0o500);
    try {
      await Deno.writeTextFile(join(dir, "probe"), "x");
      return `chmod 0500 does not stop this user (uid ${Deno.uid()}, root as in CI); ` +
        "the read-only mount and not-a-directory cases cover unwritable directories";
    } catch {
      return null;
    }
  } finally {
    await Deno.chmod(dir, 0o700);
    await Deno.remove(dir, { recursive: true });
  }
}

const NO_MOUNT = await probeMount();
const NO_CHMOD = await probeChmod();

/** A test that needs a privilege: ignored, with the reason in its name, when it is missing. */
function privTest(name: string, skip: string | null, fn: () => Promise<void>): void {
  Deno.test({ name: skip ? `${name} (skipped: ${skip})` : name, ignore: skip !== null, fn });
}

/** Runs `fn` on a fresh tmpfs of `size` mounted at `dir`, unmounted afterwards. */
async function withTmpfs(dir: string, size: string, fn: () => Promise<void>): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const m = await sh("mount", "-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir);
  assert(m.ok, `mount failed: ${m.err}`);
  try {
    await fn();
  } finally {
    const u = await sh("umount", dir);
    if (!u.ok) await sh("umount", "-l", dir);
  }
}

// -------------------------------------------------------------------- tests

Deno.test("checkpoint: save/load round trip, bit-exact, with shapes, metadata and no leftovers", async () => {
  await withRoot(async (root) => {
    const data = makeData(5, 11, 8);
    const dir = await saveCheckpoint(join(root, "ckpt"), data, {
      shapes: shapesOf(8),
      metadata: { run: "test" },
    });
    assertEquals(dir, join(root, "ckpt", "step_0000005"));
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), FILES);
    assertEquals([...Deno.readDirSync(join(root, "ckpt"))].map((e) => e.name), ["step_0000005"]);
    assertEquals(await Deno.readTextFile(join(dir, MARKER)), "5\n");
    const loaded = await loadCheckpoint(dir);
    assertEquals(loaded.dir, dir);
    assertSameData(loaded, data);
    // the files are ordinary safetensors with the real shapes and the metadata
    const model = await readSafetensors(join(dir, "model.safetensors"));
    assertEquals(model.metadata, { format: "pt", run: "test" });
    assertEquals(model.tensors.get("layers.0.mixer.weight")!.shape, [2, 4]);
    assertEquals(model.tensors.get("ln_f.weight")!.shape, [3]);
    const opt = await readSafetensors(join(dir, "optimizer.safetensors"));
    assertEquals(opt.tensors.get("exp_avg_sq.layers.0.mixer.weight")!.shape, [2, 4]);
    // latestCheckpoint finds it, silently
    const c = collector();
    const latest = await latestCheckpoint(join(root, "ckpt"), c.warn);
    assertEquals(latest?.dir, dir);
    assertEquals(c.lines, []);
    // an empty optimizer is fine too
    const bare = { ...makeData(6), optimizer: new Map() };
    assertSameData(await loadCheckpoint(await saveCheckpoint(join(root, "ckpt"), bare)), bare);
  });
});

Deno.test("checkpoint: names and listing order (numeric, not lexicographic), foreign entries ignored", async () => {
  assertEquals(checkpointName(0), "step_0000000");
  assertEquals(checkpointName(1234), "step_0001234");
  assertEquals(checkpointName(123456789), "step_123456789");
  await withRoot(async (root) => {
    for (const step of [9, 10000000, 10]) await saveCheckpoint(root, makeData(step), { keep: 9 });
    await Deno.writeTextFile(join(root, "step_0000099"), "a file, not a directory");
    await Deno.mkdir(join(root, "notes"));
    await Deno.mkdir(join(root, "step_0000050-1")); // not a checkpoint name
    const list = await listCheckpoints(root);
    assertEquals(list.map((c) => c.step), [10000000, 10, 9]);
    assertEquals(list[0].dir, join(root, "step_10000000"));
    assertEquals(await listCheckpoints(join(root, "missing")), []);
    assertEquals(await latestCheckpoint(join(root, "missing"), () => {}), null);
  });
});

Deno.test("checkpoint: an interrupted write is ignored, named, and the previous checkpoint used", async () => {
  await withRoot(async (root) => {
    await saveCheckpoint(root, makeData(1), { keep: 9 });
    const s2 = await saveCheckpoint(root, makeData(2), { keep: 9 });
    // a temp directory with partial files (killed mid-write) ...
    const tmp = join(root, `.tmp-step_0000003-${OTHER_PID}`);
    await Deno.mkdir(tmp);
    const model = await Deno.readFile(join(s2, "model.safetensors"));
    await Deno.writeFile(join(tmp, "model.safetensors"), model.subarray(0, model.length >> 1));
    // ... and a step directory without its marker
    const s4 = join(root, "step_0000004");
    await Deno.mkdir(s4);
    for (const f of FILES.slice(1)) await Deno.copyFile(join(s2, f), join(s4, f));
    const before = await hashTree(root);

    const c = collector();
    const ck = await latestCheckpoint(root, c.warn);
    assertEquals(ck?.dir, s2);
    assertSameData(ck!, makeData(2));
    assertEquals(c.lines, [
      `warning: ignoring ${s4}: an interrupted checkpoint write (not complete); using ${s2} (step 2)`,
      `warning: ignoring ${tmp}: an interrupted checkpoint write (not complete); using ${s2} (step 2)`,
    ]);
    assertEquals(await hashTree(root), before, "resume changed nothing");
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [2, 1]);
    await refused(loadCheckpoint(s4), `${s4} is not a complete checkpoint (no ${MARKER} marker)`);

    // the next save removes the other process's temp directory, not the foreign step_0000004
    await saveCheckpoint(root, makeData(3), { keep: 9 });
    assert(!(await exists(tmp)), "leftover temp directory removed");
    assert(
      await exists(join(s4, "model.safetensors")),
      "an unmarked step directory is never deleted",
    );
    assertSameData(await loadCheckpoint(join(root, "step_0000003")), makeData(3));
  });
});

Deno.test("checkpoint: a complete temp directory (crash before its rename) is not used", async () => {
  await withRoot(async (root) => {
    const s1 = await saveCheckpoint(root, makeData(1));
    const other = await Deno.makeTempDir({ dir: root, prefix: "x" });
    const s2 = await saveCheckpoint(other, makeData(2));
    const tmp = join(root, `.tmp-step_0000002-${OTHER_PID}`);
    await Deno.rename(s2, tmp);
    await Deno.remove(other, { recursive: true });
    const c = collector();
    assertEquals((await latestCheckpoint(root, c.warn))?.dir, s1);
    assertEquals(c.lines.length, 1);
    assert(
      c.lines[0].includes(`ignoring ${tmp}`) && c.lines[0].includes(`using ${s1}`),
      c.lines[0],
    );
  });
});

/** Ways to damage step 2's files, with a piece of the warning each must give. */
const DAMAGE: [string, (dir: string) => Promise<void>, string][] = [
  ["truncated model.safetensors", async (dir) => {
    const p = join(dir, "model.safetensors");
    const b = await Deno.readFile(p);
    await Deno.writeFile(p, b.subarray(0, b.length - 5));
  }, "model.safetensors: not a valid safetensors file: tensor"],
  ["model.safetensors cut inside its header", async (dir) => {
    const p = join(dir, "model.safetensors");
    await Deno.writeFile(p, (await Deno.readFile(p)).subarray(0, 40));
  }, "model.safetensors: not a valid safetensors file: header length"],
  ["empty model.safetensors", async (dir) => {
    await Deno.writeFile(join(dir, "model.safetensors"), new Uint8Array(0));
  }, "model.safetensors: not a valid safetensors file: only 0 bytes"],
  ["tampered dtype in model.safetensors", async (dir) => {
    const p = join(dir, "model.safetensors");
    const text = new TextDecoder("latin1").decode(await Deno.readFile(p));
    const at = text.indexOf('"F32"');
    assert(at > 0);
    const b = await Deno.readFile(p);
    b[at + 3] = "3".charCodeAt(0); // "F32" -> "F33"
    await Deno.writeFile(p, b);
  }, 'has unknown dtype "F33"'],
  ["tampered offsets in model.safetensors", async (dir) => {
    const p = join(dir, "model.safetensors");
    const b = await Deno.readFile(p);
    const text = new TextDecoder("latin1").decode(b);
    const at = text.indexOf('"data_offsets":[0,');
    assert(at > 0);
    b[at + 16] = "1".charCodeAt(0); // [0,24] -> [1,24]
    await Deno.writeFile(p, b);
  }, "model.safetensors: not a valid safetensors file"],
  ["missing model.safetensors", async (dir) => {
    await Deno.remove(join(dir, "model.safetensors"));
  }, "model.safetensors: cannot read"],
  ["truncated optimizer.safetensors", async (dir) => {
    const p = join(dir, "optimizer.safetensors");
    await Deno.writeFile(p, (await Deno.readFile(p)).subarray(0, 7));
  }, "optimizer.safetensors: not a valid safetensors file: only 7 bytes"],
  ["corrupt state.json", async (dir) => {
    await Deno.writeTextFile(join(dir, "state.json"), '{"step": 2,\n "data": {');
  }, "state.json: corrupt"],
  ["state.json without a step", async (dir) => {
    await Deno.writeTextFile(join(dir, "state.json"), '{"tokens": 3}');
  }, "state.json: no step number"],
  ["state.json of another step", async (dir) => {
    await Deno.writeTextFile(join(dir, "state.json"), '{"step": 7}');
  }, "state.json: says step 7, the directory is step_0000002"],
];

for (const [what, damage, expect] of DAMAGE) {
  Deno.test(`checkpoint: ${what} in the newest checkpoint -> the previous one, with a warning`, async () => {
    await withRoot(async (root) => {
      const s1 = await saveCheckpoint(root, makeData(1), { keep: 9 });
      const s2 = await saveCheckpoint(root, makeData(2), { keep: 9 });
      await damage(s2);
      const before = await hashTree(root);
      const c = collector();
      const ck = await latestCheckpoint(root, c.warn);
      assertEquals(ck?.dir, s1);
      assertSameData(ck!, makeData(1));
      assertEquals(c.lines.length, 1, c.lines.join("\n"));
      assert(c.lines[0].startsWith(`warning: skipping checkpoint ${s2}: `), c.lines[0]);
      assert(c.lines[0].includes(expect), `'${expect}' not in: ${c.lines[0]}`);
      assert(!/[\r\n]/.test(c.lines[0]), `not one line: ${JSON.stringify(c.lines[0])}`);
      assertEquals(await hashTree(root), before, "the damaged checkpoint is left as it was");
      await refused(loadCheckpoint(s2), expect);
    });
  });
}

Deno.test("checkpoint: when every checkpoint is damaged, latestCheckpoint says so and returns null", async () => {
  await withRoot(async (root) => {
    const dirs = [];
    for (const step of [1, 2]) dirs.push(await saveCheckpoint(root, makeData(step), { keep: 9 }));
    for (const d of dirs) await Deno.writeFile(join(d, "model.safetensors"), new Uint8Array(3));
    const before = await hashTree(root);
    const c = collector();
    assertEquals(await latestCheckpoint(root, c.warn), null);
    assertEquals(c.lines.length, 2);
    assert(c.lines[0].includes(dirs[1]) && c.lines[1].includes(dirs[0]), c.lines.join("\n"));
    assertEquals(await hashTree(root), before);
  });
});

Deno.test("checkpoint: pruning keeps the newest `keep` (at least one)", async () => {
  await withRoot(async (root) => {
    for (let step = 1; step <= 5; step++) await saveCheckpoint(root, makeData(step), { keep: 3 });
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [5, 4, 3]);
    assertEquals([...Deno.readDirSync(root)].length, 3, "nothing else left");
    await saveCheckpoint(root, makeData(6)); // default keep: 2
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [6, 5]);
    await saveCheckpoint(root, makeData(7), { keep: 1 });
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [7]);
    await saveCheckpoint(root, makeData(8), { keep: 0 });
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [8]);
    assertSameData((await latestCheckpoint(root))!, makeData(8));
  });
});

Deno.test("checkpoint: pruning never deletes the checkpoint it just wrote (higher steps exist)", async () => {
  await withRoot(async (root) => {
    // higher steps from an earlier run, or corrupt ones that resume skipped
    await saveCheckpoint(root, makeData(100), { keep: 9 });
    await saveCheckpoint(root, makeData(90), { keep: 9 });
    const s10 = await saveCheckpoint(root, makeData(10), { keep: 2 });
    assertSameData(await loadCheckpoint(s10), makeData(10));
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [100, 90, 10]);
    const s20 = await saveCheckpoint(root, makeData(20), { keep: 1 });
    assertSameData(await loadCheckpoint(s20), makeData(20));
    assertEquals((await listCheckpoints(root)).map((c) => c.step), [100, 20]);
  });
});

Deno.test("checkpoint: saving the same step twice replaces it, leaving nothing behind", async () => {
  await withRoot(async (root) => {
    const a = makeData(5, 1);
    const b = makeData(5, 2);
    const dir = await saveCheckpoint(root, a);
    assertEquals(await saveCheckpoint(root, b), dir);
    assertSameData(await loadCheckpoint(dir), b);
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["step_0000005"]);
    // a replacement that fails (here: shapes that do not fit the data) keeps the old copy
    const before = await hashTree(root);
    const bad = makeData(5, 3);
    await refused(
      saveCheckpoint(root, bad, { shapes: new Map([["ln_f.weight", [7]]]) }),
      `failed to write a checkpoint in ${root}`,
      "the previous checkpoint is kept",
    );
    assertEquals(await hashTree(root), before);
  });
});

Deno.test("checkpoint: a crash between the two renames of a replacement loses nothing", async () => {
  await withRoot(async (root) => {
    const dir = await saveCheckpoint(root, makeData(5, 1), { keep: 1 });
    // the state saveCheckpoint of another (crashed) process leaves between
    // rename(step_5 -> step_5.old-PID) and rename(.tmp-step_5-PID -> step_5)
    const old = `${dir}.old-${OTHER_PID}`;
    await Deno.rename(dir, old);
    const scratch = await Deno.makeTempDir({ dir: root, prefix: "x" });
    const next = await saveCheckpoint(scratch, makeData(5, 2));
    const tmp = join(root, `.tmp-step_0000005-${OTHER_PID}`);
    await Deno.rename(next, tmp);
    await Deno.remove(scratch, { recursive: true });
    const before = await hashTree(root);

    const c = collector();
    const ck = await latestCheckpoint(root, c.warn);
    assertEquals(ck?.dir, old, "the previous copy of step 5 is used");
    assertSameData(ck!, makeData(5, 1));
    assertEquals(c.lines, [
      `warning: ignoring ${tmp}: an interrupted checkpoint write (not complete); using ${old} (step 5)`,
    ]);
    assertEquals(await hashTree(root), before);
    // the next save of that step puts a fresh step_0000005 in place and removes both leftovers
    await saveCheckpoint(root, makeData(5, 3), { keep: 1 });
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["step_0000005"]);
    assertSameData((await latestCheckpoint(root))!, makeData(5, 3));
  });
});

Deno.test("checkpoint: a directory under a regular file gives the clear error, nothing created", async () => {
  await withRoot(async (root) => {
    const file = join(root, "a-file");
    await Deno.writeTextFile(file, "not a directory");
    const dir = join(file, "checkpoints");
    const e = await refused(
      saveCheckpoint(dir, makeData(1)),
      `cannot write checkpoints into ${dir} (`,
      "Not a directory",
      HINT_DIR,
    );
    assert(e.message.startsWith("cannot write"), e.message);
    await refused(
      ensureWritableDir(dir, "checkpoint", "callbacks.model_checkpoint.dirpath"),
      `checkpoint directory ${dir} is not writable (`,
      "Not a directory",
      `(${HINT_DIR})`,
    );
    await refused(latestCheckpoint(file, () => {}), `cannot list checkpoints in ${file} (`);
    await refused(loadCheckpoint(dir), `${dir} is not a complete checkpoint (no ${MARKER} marker)`);
    assertEquals(await Deno.readTextFile(file), "not a directory");
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name), ["a-file"]);
  });
});

Deno.test("checkpoint: ensureWritableDir creates the directory and leaves no probe file", async () => {
  await withRoot(async (root) => {
    const dir = join(root, "a", "b", "c");
    await ensureWritableDir(dir, "run", "hydra.run.dir");
    assertEquals([...Deno.readDirSync(dir)], []);
    await ensureWritableDir(dir, "run", "hydra.run.dir"); // existing: fine
    const file = join(dir, "file");
    await Deno.writeTextFile(file, "x");
    await refused(
      ensureWritableDir(file, "run", "hydra.run.dir"),
      `run directory ${file} is not writable (`,
      "(set hydra.run.dir to a writable directory)",
    );
    assertEquals(await Deno.readTextFile(file), "x");
  });
});

privTest("checkpoint: a chmod 0500 directory gives the clear error", NO_CHMOD, async () => {
  await withRoot(async (root) => {
    const s1 = await saveCheckpoint(root, makeData(1));
    const before = await hashTree(root);
    await Deno.chmod(root, 0o500);
    try {
      await refused(
        saveCheckpoint(root, makeData(2)),
        `cannot write checkpoints into ${root} (`,
        "Permission denied",
        HINT_DIR,
      );
      await refused(
        ensureWritableDir(root, "checkpoint", "callbacks.model_checkpoint.dirpath"),
        `checkpoint directory ${root} is not writable (`,
        "Permission denied",
      );
      assertEquals((await latestCheckpoint(root))?.dir, s1);
    } finally {
      await Deno.chmod(root, 0o700);
    }
    assertEquals(await hashTree(root), before);
  });
});

privTest(
  "checkpoint: a read-only file system gives the clear error, the checkpoint intact",
  NO_MOUNT,
  async () => {
    await withRoot(async (root) => {
      const mnt = join(root, "ro");
      await withTmpfs(mnt, "1m", async () => {
        const s1 = await saveCheckpoint(mnt, makeData(1));
        const before = await hashTree(mnt);
        const r = await sh("mount", "-o", "remount,ro", mnt);
        assert(r.ok, `remount failed: ${r.err}`);
        await refused(
          saveCheckpoint(mnt, makeData(2)),
          `cannot write checkpoints into ${mnt} (`,
          "Read-only file system",
          HINT_DIR,
        );
        await refused(
          saveCheckpoint(mnt, makeData(1, 9)), // replacing the same step
          `cannot write checkpoints into ${mnt} (`,
        );
        await refused(
          ensureWritableDir(mnt, "checkpoint", "callbacks.model_checkpoint.dirpath"),
          `checkpoint directory ${mnt} is not writable (`,
          "Read-only file system",
        );
        const c = collector();
        assertEquals((await latestCheckpoint(mnt, c.warn))?.dir, s1);
        assertEquals(c.lines, []);
        assertEquals(await hashTree(mnt), before);
      });
    });
  },
);

privTest(
  "checkpoint: a full disk gives the clear error, keeps the previous checkpoint, leaves no temp dir",
  NO_MOUNT,
  async () => {
    await withRoot(async (root) => {
      const mnt = join(root, "small");
      await withTmpfs(mnt, "64k", async () => {
        const s1 = await saveCheckpoint(mnt, makeData(1)); // a few hundred bytes per file
        const before = await hashTree(mnt);
        const big = 40000; // 160 KB of weights: more than the 64 KB file system holds
        for (const data of [makeData(2, 2, big), makeData(1, 3, big)]) { // a new step, the same step
          await refused(
            saveCheckpoint(mnt, data, { shapes: shapesOf(big) }),
            `disk full while writing a checkpoint in ${mnt}; the previous checkpoint is kept`,
            "(free disk space or change callbacks.model_checkpoint.dirpath)",
          );
          assertEquals(await hashTree(mnt), before, "the previous checkpoint intact, no temp dir");
        }
        const c = collector();
        const ck = await latestCheckpoint(mnt, c.warn);
        assertEquals(ck?.dir, s1);
        assertSameData(ck!, makeData(1));
        assertEquals(c.lines, []);
        // fill the rest: the up-front check says so too
        const filler = await Deno.open(join(mnt, "filler"), { write: true, create: true });
        try {
          const chunk = new Uint8Array(4096);
          for (;;) await filler.write(chunk);
        } catch (e) {
          assert(/No space left|os error 28/.test((e as Error).message), String(e));
        } finally {
          filler.close();
        }
        await refused(
          ensureWritableDir(mnt, "checkpoint", "callbacks.model_checkpoint.dirpath"),
          `checkpoint directory ${mnt} is not writable (`,
          "No space left on device",
        );
        await Deno.remove(join(mnt, "filler"));
        assertEquals(await hashTree(mnt), before);
      });
    });
  },
);
