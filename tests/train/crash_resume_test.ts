/**
 * Crash and resume, bit-identical: a tiny training job (8 optimizer steps of 2
 * micro-batches, logging every step, a checkpoint every 2 steps, validation
 * every 3) is run once without interruption, then again in a subprocess that
 * is killed with SIGKILL at several points — during a step, during a
 * checkpoint write (when its temp directory appears), during evaluation, the
 * final test, and at random delays — and resumed with `resume=true` until it
 * finishes. The per-step train losses, learning rates and gradient norms (the
 * last metrics.jsonl record per step), the validation and test losses, and the
 * final checkpoint's model.safetensors and optimizer.safetensors (byte for
 * byte) must equal the uninterrupted run's.
 *
 * The kill points are drawn from a seeded RNG: the seed is printed; set
 * BASED_CRASH_SEED to replay one.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { listCheckpoints } from "../../train/checkpoint.ts";
import { MetricsLog, readMetrics } from "../../train/metrics.ts";
import { Rng } from "../helpers.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const STEPS = 8;
/** tiny model and data: ~0.5 s per optimizer step on lavapipe */
const TINY = [
  "experiment=example/based-tiny",
  "seed=4321",
  "datamodule.max_length=32",
  "datamodule.batch_size=2",
  "datamodule.batch_size_eval=2",
  "train.global_batch_size=4", // 2 micro-batches per optimizer step
  "model.config.n_embd=32",
  "model.config.n_layer=3",
  "model.config.n_inner=64",
  `trainer.max_steps=${STEPS}`,
  "train.scheduler.warmup_t=2",
  "trainer.log_every_n_steps=1",
  "trainer.val_check_interval=6", // micro-batches: every 3 optimizer steps
  "trainer.limit_val_batches=2",
  "trainer.limit_test_batches=2",
  "callbacks.model_checkpoint.every_n_train_steps=2",
  "resume=true",
];

type Trigger =
  | { kind: "line"; pattern: RegExp; step: number }
  | { kind: "tmpdir"; step: number }
  /** ms after the process started, or after it said where it resumes (just before step 1) */
  | { kind: "delay"; ms: number; from: "spawn" | "resume" };

interface Plan {
  what: string;
  trigger: Trigger;
  /** extra delay after the trigger, ms */
  after: number;
}

interface Attempt {
  code: number | null;
  killed: boolean;
  stdout: string[];
  stderr: string;
  /** this process left a checkpoint temp directory (it was killed while writing one) */
  tmpLeft: boolean;
}

async function exists(p: string): Promise<boolean> {
  return await Deno.stat(p).then(() => true, () => false);
}

async function tmpDirs(ck: string): Promise<string[]> {
  const out = [];
  try {
    for await (const e of Deno.readDir(ck)) if (e.name.startsWith(".tmp-step_")) out.push(e.name);
  } catch { /* not yet created */ }
  return out;
}

/** One `based train` process in `dir` (ck/ and run/ under it), killed per `plan` (if given). */
async function attempt(cwd: string, dir: string, plan: Plan | null): Promise<Attempt> {
  const ck = join(dir, "ck");
  await Deno.mkdir(ck, { recursive: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "train",
      ...TINY,
      `callbacks.model_checkpoint.dirpath=${ck}`,
      `hydra.run.dir=${join(dir, "run")}`,
    ],
    cwd,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  let tmpLeft = false;
  let done = false;
  const kill = async () => {
    if (killed || done) return;
    if (plan!.after > 0) await new Promise((r) => setTimeout(r, plan!.after));
    if (done) return;
    try {
      child.kill("SIGKILL");
      killed = true;
    } catch { /* already exited */ }
  };
  const t = plan?.trigger;
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (t?.kind === "delay" && t.from === "spawn") timer = setTimeout(kill, t.ms);
  let watcher: Deno.FsWatcher | null = null;
  const watching = t?.kind === "tmpdir"
    ? (async () => {
      watcher = Deno.watchFs(ck, { recursive: false });
      const name = `.tmp-step_${String(t.step).padStart(7, "0")}-`;
      for await (const ev of watcher) {
        if (ev.kind === "create" && ev.paths.some((p) => p.includes(name))) {
          await kill();
          break;
        }
      }
    })()
    : Promise.resolve();
  const stdout: string[] = [];
  const reading = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        stdout.push(line);
        if (t?.kind === "line" && t.pattern.test(line)) kill();
        if (t?.kind === "delay" && t.from === "resume" && /^(resumed from|resume: )/.test(line)) {
          timer = setTimeout(kill, t.ms);
        }
      }
    }
    if (buf) stdout.push(buf);
  })();
  const stderrText = new Response(child.stderr).text();
  const status = await child.status;
  done = true;
  clearTimeout(timer);
  if (killed) tmpLeft = (await tmpDirs(ck)).some((n) => n.endsWith(`-${child.pid}`));
  (watcher as Deno.FsWatcher | null)?.close();
  await watching;
  await reading;
  return { code: status.code, killed, stdout, stderr: await stderrText, tmpLeft };
}

interface Metric {
  split: string;
  step: number;
  loss: number;
  lr?: number;
  grad_norm?: number;
}

/** metrics.jsonl: the last record per (split, step), and how many lines did not parse. */
async function lastMetrics(runDir: string): Promise<{ recs: Map<string, Metric>; bad: number }> {
  const recs = new Map<string, Metric>();
  let bad = 0;
  for (const line of (await Deno.readTextFile(join(runDir, "metrics.jsonl"))).split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as Metric;
      recs.set(`${r.split}:${r.step}`, r);
    } catch {
      bad++; // a line cut by SIGKILL
    }
  }
  return { recs, bad };
}

function summary(recs: Map<string, Metric>) {
  const pick = (split: string) =>
    [...recs.values()].filter((r) => r.split === split).sort((a, b) => a.step - b.step);
  return {
    train: pick("train").map((r) => [r.step, r.loss, r.lr, r.grad_norm]),
    val: pick("val").map((r) => [r.step, r.loss]),
    test: pick("test").map((r) => [r.step, r.loss]),
  };
}

async function newestCheckpointStep(ck: string): Promise<number> {
  return (await listCheckpoints(ck))[0]?.step ?? 0;
}

/** The kill plans, in the order they are tried; randomness from `rng`. */
function plans(rng: Rng): Plan[] {
  const u = (lo: number, hi: number) => Math.round(lo + (hi - lo) * rng.next());
  const stepLine = (k: number) => new RegExp(`^step +${k}/${STEPS} `);
  return [
    {
      what: "random delay from the start",
      trigger: { kind: "delay", ms: u(300, 2500), from: "spawn" },
      after: 0,
    },
    {
      what: "during step 2 (no checkpoint yet)",
      trigger: { kind: "line", pattern: stepLine(1), step: 1 },
      after: u(0, 300),
    },
    {
      what: "during the step-2 checkpoint write",
      trigger: { kind: "tmpdir", step: 2 },
      after: u(0, 5),
    },
    {
      what: "during the step-3 validation",
      trigger: { kind: "line", pattern: stepLine(3), step: 3 },
      after: u(0, 10),
    },
    {
      what: "during the step-4 checkpoint write",
      trigger: { kind: "tmpdir", step: 4 },
      after: u(0, 5),
    },
    {
      what: "random delay after resuming",
      trigger: { kind: "delay", ms: u(0, 1500), from: "resume" },
      after: 0,
    },
    {
      what: "during the step-6 checkpoint write (after validation)",
      trigger: { kind: "tmpdir", step: 6 },
      after: u(0, 5),
    },
    {
      what: "during step 7",
      trigger: { kind: "line", pattern: stepLine(6), step: 6 },
      after: u(100, 500),
    },
    {
      what: "during the final test evaluation",
      trigger: { kind: "line", pattern: /^checkpoint .*step_0000008$/, step: STEPS },
      after: 0,
    },
  ];
}

Deno.test({
  name: "crash-resume: SIGKILL at random points, resumed until done: bit-identical to one run",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const seed = Number(Deno.env.get("BASED_CRASH_SEED") ?? (Date.now() % 1e9));
    console.log(`crash-resume: kill-point seed ${seed} (replay with BASED_CRASH_SEED=${seed})`);
    const root = await Deno.makeTempDir({ prefix: "based-crash-resume-" });
    try {
      const fail = (a: Attempt, what: string) =>
        `${what}: exit ${a.code}\n${a.stdout.slice(-8).join("\n")}\n${a.stderr.slice(-2000)}`;

      // the uninterrupted run (it also builds the token cache in root/.cache)
      const ref = await attempt(root, join(root, "ref"), null);
      assert(ref.code === 0, fail(ref, "reference run"));

      // the interrupted one
      const dir = join(root, "crash");
      const queue = plans(new Rng(seed));
      const log: string[] = [];
      let kills = 0, tmpKills = 0;
      for (let i = 0; i < 40; i++) {
        const at = await newestCheckpointStep(join(dir, "ck"));
        // a plan whose trigger lies at or before the checkpoint resumed from cannot fire: skip it
        while (queue.length) {
          const t = queue[0].trigger;
          if (t.kind !== "delay" && t.step <= at) queue.shift();
          else break;
        }
        const plan = queue.shift() ?? null;
        const a = await attempt(root, dir, plan);
        if (a.killed) {
          kills++;
          if (a.tmpLeft) tmpKills++;
          log.push(
            `killed ${plan!.what} (+${plan!.after} ms; resumed from step ${at}; last line ` +
              `'${a.stdout.at(-1) ?? ""}'${a.tmpLeft ? "; a checkpoint temp dir was left" : ""})`,
          );
          continue;
        }
        assert(a.code === 0, fail(a, `attempt ${i + 1} (resumed from step ${at})`));
        if (plan) log.push(`${plan.what}: not reached, the run finished`);
        break;
      }
      console.log(log.map((l) => `  ${l}`).join("\n"));
      assert(kills >= 5, `only ${kills} kills happened:\n${log.join("\n")}`);
      console.log(`  ${kills} kills, ${tmpKills} left an interrupted checkpoint write behind`);
      assert(await exists(join(dir, "ck", "step_0000008", "COMPLETE")), "the run finished");

      // metrics: the last record per step, bit-identical (JSON keeps float64 exactly)
      const a = await lastMetrics(join(root, "ref", "run"));
      const b = await lastMetrics(join(dir, "run"));
      assertEquals(a.bad, 0);
      assert(b.bad <= kills, `${b.bad} unparseable metrics lines for ${kills} kills`);
      const sa = summary(a.recs), sb = summary(b.recs);
      assertEquals(sa.train.map((r) => r[0]), [1, 2, 3, 4, 5, 6, 7, 8]);
      assertEquals(sa.val.map((r) => r[0]), [3, 6]);
      assertEquals(sa.test.map((r) => r[0]), [8]);
      assertEquals(sb, sa, "per-step losses, lr, grad norms, val and test losses");

      // final weights and optimizer moments, byte for byte; the saved position and counters
      for (const f of ["model.safetensors", "optimizer.safetensors"]) {
        const x = await Deno.readFile(join(root, "ref", "ck", "step_0000008", f));
        const y = await Deno.readFile(join(dir, "ck", "step_0000008", f));
        assert(x.length === y.length && x.every((v, k) => v === y[k]), `${f} differs`);
      }
      const state = async (d: string) => {
        const s = JSON.parse(await Deno.readTextFile(join(d, "ck", "step_0000008", "state.json")));
        return { step: s.step, tokens: s.tokens, optimizer: s.optimizer, data: s.data };
      };
      assertEquals(await state(dir), await state(join(root, "ref")));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("crash-resume: a metrics.jsonl line cut by a kill does not swallow the next record", async () => {
  const dir = await Deno.makeTempDir({ prefix: "based-metrics-cut-" });
  try {
    const path = join(dir, "metrics.jsonl");
    await Deno.writeTextFile(path, '{"split":"train","step":1,"loss":2}\n{"split":"train","st');
    const m = new MetricsLog(path);
    await m.append({ split: "train", step: 2, loss: 1 });
    m.close();
    const recs = await readMetrics(path);
    assertEquals(recs.map((r) => r.step), [1, 2]);
    // an intact file gets no blank line
    const m2 = new MetricsLog(path);
    await m2.append({ split: "train", step: 3, loss: 0.5 });
    m2.close();
    assert(!(await Deno.readTextFile(path)).includes("\n\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
