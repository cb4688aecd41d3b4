/**
 * f16 mixed precision in training: trainer.precision's values, the run's
 * record of what ran, a small model trained in f16 ending within 2% of the
 * fp32 run's validation loss, and resume in f16 bit-identical to an
 * uninterrupted run (the loss scaler's state is in the checkpoint).
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import { join } from "node:path";
import type { Config } from "../../config/mod.ts";
import { composeConfig } from "../../configs/mod.ts";
import { BasedLM } from "../../model/based.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { AdamW } from "../../optim/adamw.ts";
import { GradClip } from "../../optim/clip.ts";
import { backward, noGrad } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import type { Engine } from "../../tensor/engine.ts";
import {
  MixedPrecision,
  parsePrecision,
  precisionForAdapter,
  requireF16,
  withPrecision,
} from "../../train/amp.ts";
import { train } from "../../train/loop.ts";
import { readSettings } from "../../train/settings.ts";
import { gpuTest, Rng } from "../helpers.ts";

Deno.test("precision: trainer.precision values, bf16 said once, others refused in one line", () => {
  for (const v of [32, "32", "32-true", undefined, null]) {
    assertEquals(parsePrecision(v), { precision: "32-true", note: null });
  }
  for (const v of [16, "16", "16-mixed"]) {
    assertEquals(parsePrecision(v), { precision: "16-mixed", note: null });
  }
  for (const v of ["bf16", "bf16-mixed"]) {
    const p = parsePrecision(v);
    assertEquals(p.precision, "16-mixed");
    assert(/WebGPU has no bf16.*f16 mixed precision/.test(p.note!), p.note!);
  }
  for (const v of ["64", "fp8", 8, "16-true", ""]) {
    throws(
      () => parsePrecision(v),
      /trainer.precision .* is not supported; use one of 32, 32-true, 16, 16-mixed, bf16, bf16-mixed/,
    );
  }
  const fake = { hasF16: false, info: { name: "some adapter" } } as unknown as Engine;
  throws(() => requireF16(fake), (e: Error) => {
    const hint = (e as Error & { hint?: string }).hint ?? "";
    return /has no shader-f16/.test(e.message) && /trainer.precision=32/.test(e.message + hint);
  });
});

Deno.test("precision: the config shows it (default 32, the experiments' bf16); what ran is recorded", () => {
  const base = composeConfig(["experiment=example/based-tiny", "~trainer.precision"]);
  assertEquals((base.trainer as Record<string, unknown>).precision, undefined);
  assertEquals(readSettings(base, "/tmp").precision, "32-true"); // absent: fp32
  const tiny = composeConfig(["experiment=example/based-tiny"]);
  assertEquals((tiny.trainer as Record<string, unknown>).precision, "bf16");
  const S = readSettings(tiny, "/tmp");
  assertEquals([S.precision, S.precisionNote !== null], ["16-mixed", true]);
  const ran = withPrecision(tiny, S.precision) as Record<string, Record<string, unknown>>;
  assertEquals(ran.trainer.precision, "16-mixed");
  assertEquals((tiny.trainer as Record<string, unknown>).precision, "bf16"); // not mutated
  throws(
    () =>
      readSettings(composeConfig(["experiment=example/based-tiny", "trainer.precision=64"]), "/"),
    /not supported/,
  );
});

// ------------------------------------------------------------------ f16 vs fp32 convergence

const V = 64, L = 32, B = 8, STEPS = 80, VAL = 16;

/** Sequences from a fixed random Markov chain over V tokens (4 likely successors each). */
function markovData(seed: number, n: number): Int32Array[] {
  const rng = new Rng(99);
  const next = Array.from({ length: V }, () => Array.from({ length: 4 }, () => rng.int(V)));
  const r = new Rng(seed);
  return Array.from({ length: n }, () => {
    const s = new Int32Array(L + 1);
    s[0] = r.int(V);
    for (let i = 1; i <= L; i++) s[i] = r.next() < 0.9 ? next[s[i - 1]][r.int(4)] : r.int(V);
    return s;
  });
}

function batchOf(e: Engine, seqs: Int32Array[]) {
  const x = new Int32Array(seqs.length * L), y = new Int32Array(seqs.length * L);
  seqs.forEach((s, b) => {
    x.set(s.subarray(0, L), b * L);
    y.set(s.subarray(1), b * L);
  });
  return {
    ids: e.tensor(x, [seqs.length, L], "i32"),
    hostIds: x,
    labels: e.tensor(y, [seqs.length, L], "i32"),
    B: seqs.length,
    L,
  };
}

async function trainSmall(e: Engine, f16: boolean): Promise<number> {
  const cfg = composeConfig([
    "experiment=example/based-tiny",
    "model.config.n_embd=32",
    "model.config.n_layer=3", // BaseConv, linear attention, sliding window
    "model.config.n_inner=64",
    `datamodule.max_length=${L}`,
  ]) as Record<string, Record<string, unknown>>;
  const mc = modelConfigFromCfg({ ...cfg.model.config as object, vocab_size: V }, L);
  const model = BasedLM.create(e, mc, { seed: 7, groupOf: () => "all", groupOrder: ["all"] });
  const adam = new AdamW(model.store, { all: { weightDecay: 0.1 } }, {
    lr: 3e-3,
    betas: [0.9, 0.95],
    eps: 1e-8,
  });
  const amp = f16 ? MixedPrecision.create(e) : null;
  const clip = new GradClip(model.store, 1.0, amp?.scaler ?? null);
  const data = markovData(1, STEPS * B), val = markovData(2, VAL);
  try {
    for (let s = 0; s < STEPS; s++) {
      const b = batchOf(e, data.slice(s * B, (s + 1) * B));
      model.store.zeroGrads();
      tidy(() => backward(model.loss(b, { gradScale: 1 / (B * L) })));
      clip.compute();
      adam.step(3e-3, { clip });
      amp?.newWeights();
      b.ids.dispose();
      b.labels.dispose();
    }
    const vb = batchOf(e, val);
    const t = noGrad(() => tidy(() => model.loss(vb)));
    const loss = (await e.readF32(t))[0];
    t.dispose();
    vb.ids.dispose();
    vb.labels.dispose();
    if (amp) assertEquals((await amp.read()).skipped_steps, 0);
    return loss;
  } finally {
    amp?.destroy();
    clip.destroy();
    adam.destroy();
    model.store.destroy();
  }
}

gpuTest(
  `f16 training: a small model after ${STEPS} steps ends within 2% of fp32's validation loss`,
  async (e) => {
    const l32 = await trainSmall(e, false);
    const l16 = await trainSmall(e, true);
    console.log(`validation loss: fp32 ${l32.toFixed(5)}, f16 ${l16.toFixed(5)}`);
    assert(l32 < Math.log(V) * 0.8, `the model learned (fp32 loss ${l32} vs ln V ${Math.log(V)})`);
    assert(Math.abs(l16 - l32) / l32 < 0.02, `f16 ${l16} vs fp32 ${l32}: over 2%`);
  },
);

// ------------------------------------------------------------------ resume

const TINY = [
  "experiment=example/based-tiny",
  "trainer.precision=16-mixed",
  "seed=4321",
  "datamodule.max_length=32",
  "datamodule.batch_size=2",
  "datamodule.batch_size_eval=2",
  "train.global_batch_size=4", // 2 micro-batches per optimizer step
  "model.config.n_embd=32",
  "model.config.n_layer=3",
  "model.config.n_inner=64",
  "trainer.max_steps=4",
  "train.scheduler.warmup_t=2",
  "trainer.log_every_n_steps=1",
  "trainer.val_check_interval=1000",
  "do_test=false",
  "callbacks.model_checkpoint.every_n_train_steps=2",
  "+train.grad_scaler.growth_interval=3", // the scale grows once, inside the resumed part
  "+quiet=true",
];

function tinyCfg(cwd: string, name: string, resume: boolean): Config {
  return composeConfig([
    ...TINY,
    `hydra.run.dir=${join(cwd, name, "run")}`,
    `callbacks.model_checkpoint.dirpath=${join(cwd, name, "ck")}`,
    `resume=${resume}`,
  ], { cwd, env: Deno.env.toObject() });
}

gpuTest(
  "f16 training: resume from a checkpoint is bit-identical (scaler state included)",
  async () => {
    const cwd = await Deno.makeTempDir({ prefix: "based-amp-" });
    try {
      const quiet = { cwd, log: () => {} };
      const full = await train(tinyCfg(cwd, "full", false), quiet);
      await train(tinyCfg(cwd, "split", false), { ...quiet, stopAfter: 2 });
      const resumed = await train(tinyCfg(cwd, "split", true), quiet);
      assertEquals(resumed.steps, 4);
      assertEquals([...resumed.losses], [...full.losses].filter(([s]) => s > 2));
      for (const f of ["model.safetensors", "optimizer.safetensors", "state.json"]) {
        const a = await Deno.readFile(join(cwd, "full", "ck", "step_0000004", f));
        const b = await Deno.readFile(join(cwd, "split", "ck", "step_0000004", f));
        if (f === "state.json") {
          const sa = JSON.parse(new TextDecoder().decode(a)),
            sb = JSON.parse(new TextDecoder().decode(b));
          assertEquals(sb.scaler, sa.scaler);
          assertEquals(sa.scaler.scale, 131072); // grew after 3 clean steps
          assertEquals(sa.config.trainer.precision, "16-mixed");
        } else assert(a.length === b.length && a.every((x, i) => x === b[i]), `${f} differs`);
      }
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  },
);

Deno.test("precision: an unsupported value is one line from `based train` and `based eval`", async () => {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const run = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", main, ...args],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    return { code: out.code, err: new TextDecoder().decode(out.stderr).trim() };
  };
  const t = await run(["train", "experiment=example/based-tiny", "trainer.precision=64"]);
  assertEquals(t.code, 1);
  assertEquals(t.err.split("\n").length, 1, t.err);
  assert(
    /^error: trainer.precision "?64"? is not supported; use one of 32, 32-true/.test(t.err),
    t.err,
  );
  const e = await run(["eval", "--checkpoint", "nowhere", "--precision", "8"]);
  assertEquals(e.code, 1);
  assertEquals(e.err.split("\n").length, 1, e.err);
  assert(
    /--precision.*expected one of 32, 32-true, 16, 16-mixed, bf16, bf16-mixed/.test(e.err),
    e.err,
  );
});

Deno.test("amp: bf16 on an adapter without shader-f16 (Mesa's GL path) runs fp32, said in one line; 16-mixed is kept (and fails there)", () => {
  const gl = { hasF16: false, name: "llvmpipe" }, gpu = { hasF16: true, name: "GPU" };
  const bf16 = precisionForAdapter(parsePrecision("bf16"), gl);
  assertEquals(bf16.precision, "32-true");
  assert(bf16.line!.includes("running fp32"));
  assertEquals(precisionForAdapter(parsePrecision("bf16"), gpu).precision, "16-mixed");
  assertEquals(precisionForAdapter(parsePrecision("16-mixed"), gl), {
    precision: "16-mixed",
    line: null,
  });
  assertEquals(precisionForAdapter(parsePrecision("32"), gl), { precision: "32-true", line: null });
});
