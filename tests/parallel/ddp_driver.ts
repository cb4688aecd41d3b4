/**
 * The driver the data-parallel tests start, once per process (under
 * `mpirun -np 2`, or alone for the single-process reference):
 *
 *   deno run -A tests/parallel/ddp_driver.ts primitives OUT
 *   deno run -A tests/parallel/ddp_driver.ts model OUT DEVICES BATCH ACCUMULATE STEPS
 *   deno run -A tests/parallel/ddp_driver.ts loop OUT DEVICES BATCH DATA_DIR STEPS
 *
 * `primitives`: the MPI layer and DataParallel on a synthetic ParamStore
 * (checks run on every rank; a failure exits non-zero, so mpirun fails).
 * `model`: a tiny Based model (BasedLM, AdamW, GradClip, TrainSampler), the
 * training loop's step written out, for STEPS optimizer steps.
 * `loop`: the real `train()` (train/loop.ts) with `trainer.devices=DEVICES`.
 * Only rank 0 writes into OUT.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import { initEngine } from "../../tensor/engine.ts";
import { BasedError } from "../../errors.ts";
import { type ParamSpec, ParamStore } from "../../tensor/params.ts";
import { backward } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import { accumulate, fill } from "../../kernels/elementwise.ts";
import { BasedLM } from "../../model/based.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { AdamW } from "../../optim/adamw.ts";
import { GradClip } from "../../optim/clip.ts";
import { paramGroup } from "../../optim/groups.ts";
import { LMDataset, TrainSampler } from "../../data/lm_dataset.ts";
import { DataParallel } from "../../parallel/data_parallel.ts";
import { Mpi } from "../../parallel/mpi.ts";
import { Rng } from "../helpers.ts";

/** The tiny model of the tests: one layer of each mixer kind. */
export const TINY_MODEL = {
  n_embd: 32,
  n_layer: 3,
  n_head: 2,
  n_inner: 64,
  vocab_size: 97,
  pad_vocab_size_multiple: 8,
  mixer: { _target_: "based.models.mixers.convolution.BaseConv", expand_proj: 2 },
  alt_mixer: {
    _target_: "based.models.mixers.linear_attention.LinearAttention",
    feature_dim: 8,
    num_heads: 2,
    head_dim: 16,
  },
  alt_mixer_2: {
    _target_: "based.models.mixers.slide_attention.SlidingAttention",
    window_size: 8,
    num_heads: 2,
  },
  alt_mixer_layers: [1],
  alt_mixer_2_layers: [2],
};
export const SEQ_LEN = 16;
/** synthetic corpus: 64 sequences of SEQ_LEN tokens (a noisy repeating pattern, so it learns) */
export const SEQUENCES = 64;
const GROUPING = { bias_weight_decay: false, normalization_weight_decay: false };

async function writeJson(out: string, name: string, v: unknown): Promise<void> {
  await Deno.mkdir(out, { recursive: true });
  await Deno.writeTextFile(join(out, name), JSON.stringify(v, null, 1));
}

// ------------------------------------------------------------------ primitives

const SIZES = [2999, 1, 77, 1025, 64, 2048, 5, 513, 2600];

async function primitives(out: string): Promise<void> {
  const mpi = Mpi.open().init();
  const { rank, size } = mpi;
  ok(size === 2, `run with 2 processes, got ${size}`);
  ok(mpi.threadLevel === "serialized" || mpi.threadLevel === "multiple", `${mpi.threadLevel}`);

  // the handles from libc dlsym are the addresses Deno's own dlopen gives for the statics
  const lib = Deno.dlopen(mpi.library, {
    ompi_mpi_comm_world: { type: "pointer" },
    ompi_mpi_float: { type: "pointer" },
    ompi_mpi_op_sum: { type: "pointer" },
  });
  for (
    const [k, s] of [["commWorld", "ompi_mpi_comm_world"], ["float", "ompi_mpi_float"], [
      "sum",
      "ompi_mpi_op_sum",
    ]] as const
  ) {
    const viaDeno = Deno.UnsafePointer.value(lib.symbols[s] as Deno.PointerValue);
    deepStrictEqual(Deno.UnsafePointer.value(mpi.handle(k)), viaDeno, `${s}`);
  }
  ok(mpi.errorString(1).length > 0);

  // raw collectives
  const f = new Float32Array([rank + 1, -rank, 0.5]);
  await mpi.allreduce(f, "sum");
  deepStrictEqual([...f], [3, -1, 1]);
  const d = new Float64Array([rank * 10 + 1]);
  await mpi.allreduce(d, "max");
  deepStrictEqual([...d], [11]);
  const i = new Int32Array([rank + 5]);
  await mpi.allreduce(i, "min");
  deepStrictEqual([...i], [5]);
  const bytes = new Uint8Array([rank ? 0 : 7, rank ? 0 : 9]);
  await mpi.bcast(bytes, 0);
  deepStrictEqual([...bytes], [7, 9]);
  await mpi.barrier();

  // DataParallel on a synthetic store: several chunks, 1 KiB buckets (boundaries inside parameters)
  const e = await initEngine();
  const specs: ParamSpec[] = SIZES.map((n, k) => ({
    name: `p${k}`,
    shape: [n],
    group: "decay",
    // rank-dependent initial values: broadcastParams must make them rank 0's
    init: Float32Array.from(new Rng(100 + rank).randn(n, 0.5)),
  }));
  const store = new ParamStore(e, specs, ["decay"], { maxChunkElements: 3008 });
  ok(store.values.length >= 4, `expected several chunks, got ${store.values.length}`);
  const dp = new DataParallel(mpi, { bucketBytes: 1024, lookahead: 3 });
  const buckets = dp.buckets(store);
  const covered = store.chunkSizes.map(() => 0);
  for (const b of buckets) {
    ok(b.start === covered[b.chunk], "buckets in order, contiguous");
    ok(b.start % 64 === 0 && b.length <= 256);
    covered[b.chunk] += b.length;
  }
  deepStrictEqual(covered, store.chunkSizes);

  let inSync = true;
  try {
    await dp.assertInSync(store);
  } catch (err) {
    ok(err instanceof BasedError);
    inSync = false;
  }
  ok(!inSync, "assertInSync must notice different weights");
  await dp.broadcastParams(store);
  const vals = await store.read("values");
  const rank0 = (k: number) => Float32Array.from(new Rng(100).randn(SIZES[k], 0.5));
  for (let k = 0; k < SIZES.length; k++) deepStrictEqual(vals.get(`p${k}`), rank0(k), `p${k}`);
  await dp.assertInSync(store);

  // gradients: rank r holds g_r; after allreduceGrads every rank holds fround(fround(g0 + g1) / 2)
  const grad = (r: number, k: number) => Float32Array.from(new Rng(1000 * r + k).randn(SIZES[k]));
  for (let k = 0; k < SIZES.length; k++) e.upload(store.params[k].tensor.grad!, grad(rank, k));
  await dp.allreduceGrads(store);
  const g = await store.read("grads");
  for (let k = 0; k < SIZES.length; k++) {
    const a = grad(0, k), b = grad(1, k);
    const want = a.map((x, j) => Math.fround(Math.fround(x + b[j]) * 0.5));
    deepStrictEqual(g.get(`p${k}`), want, `grad p${k} (bit-exact for 2 ranks)`);
  }
  // the arena padding stays zero
  for (let c = 0; c < store.grads.length; c++) {
    const chunk = await e.readF32(store.chunkTensor("grads", c));
    for (const p of store.params.filter((p) => p.chunk === c)) {
      chunk.fill(0, p.offset, p.offset + p.size);
    }
    ok(chunk.every((x) => x === 0), `padding of chunk ${c}`);
  }
  const stats = dp.lastStats!;
  deepStrictEqual(stats.buckets, buckets.length);
  deepStrictEqual(stats.bytes, store.chunkSizes.reduce((s, n) => s + n, 0) * 4);

  deepStrictEqual(await dp.allreduceMean([rank, 10, 0.25 * rank]), [0.5, 10, 0.125]);
  if (dp.isRoot) {
    await writeJson(out, "primitives.json", {
      library: mpi.library,
      version: mpi.version,
      threadLevel: mpi.threadLevel,
      chunks: store.chunkSizes,
      buckets: buckets.length,
      stats,
    });
  }
  store.destroy();
  await dp.finalize();
}

// ------------------------------------------------------------------ the tiny model

export function syntheticTokens(): Uint16Array {
  const rng = new Rng(7);
  const t = new Uint16Array(SEQUENCES * SEQ_LEN + 1);
  for (let i = 0; i < t.length; i++) t[i] = rng.next() < 0.8 ? (i * 5) % 97 : rng.int(97);
  return t;
}

async function model(
  out: string,
  devices: number,
  batch: number,
  acc: number,
  steps: number,
): Promise<void> {
  const dp = await DataParallel.init(devices, { bucketBytes: 64 << 10 });
  const world = dp?.world ?? 1, rank = dp?.rank ?? 0, root = !dp || dp.isRoot;
  const e = await initEngine();
  const mc = modelConfigFromCfg(TINY_MODEL, SEQ_LEN);
  const m = BasedLM.create(e, mc, {
    // a rank-dependent seed: the broadcast must replace the other ranks' weights
    seed: 1 + rank,
    groupOf: (n, k) => paramGroup(n, k, GROUPING),
  });
  const adam = new AdamW(m.store, { decay: { weightDecay: 0.1 }, no_decay: { weightDecay: 0 } }, {
    lr: 3e-3,
    betas: [0.9, 0.95],
    eps: 1e-8,
  });
  const clip = new GradClip(m.store, 0.5); // low enough to clip: the global norm must be the mean's
  const ds = new LMDataset(syntheticTokens(), SEQ_LEN);
  const sampler = new TrainSampler(ds.length, {
    seed: 3,
    batchSize: batch,
    worldSize: world,
    rank,
  });
  await dp?.broadcastParams(m.store);
  const initial = root ? await m.store.read("values") : null;
  const L = SEQ_LEN;
  const lossSum = e.empty([1]);
  const losses: number[] = [], norms: number[] = [], seen: number[][] = [];
  for (let s = 0; s < steps; s++) {
    m.store.zeroGrads();
    fill(lossSum, 0);
    for (let k = 0; k < acc; k++) {
      const idx = sampler.next();
      seen.push(idx);
      const { inputs, labels } = ds.batch(idx);
      const b = {
        ids: e.tensor(inputs, [idx.length, L], "i32"),
        hostIds: inputs,
        labels: e.tensor(labels, [idx.length, L], "i32"),
        B: idx.length,
        L,
      };
      tidy(() => {
        const loss = m.loss(b, { gradScale: 1 / (b.B * L * acc) }); // mean over the micro-batch / acc
        backward(loss);
        accumulate(lossSum, loss);
      });
      b.ids.dispose();
      b.labels.dispose();
    }
    if (dp) await dp.allreduceGrads(m.store);
    clip.compute();
    adam.step(3e-3, { clip });
    let loss = (await e.readF32(lossSum))[0] / acc;
    if (dp) loss = (await dp.allreduceMean([loss]))[0];
    losses.push(loss);
    norms.push(await clip.readNorm());
  }
  if (dp) await dp.assertInSync(m.store);
  // every rank's samples, gathered on rank 0 (the test checks the DistributedSampler layout)
  const mine = Float64Array.from(seen.flat());
  const all = new Float64Array(mine.length * world);
  all.set(mine, rank * mine.length);
  if (dp) await dp.comm.allreduce(all, "sum");
  if (root) {
    const names = m.store.params.map((p) => p.name);
    const flat = (w: Map<string, Float32Array>) => {
      const f = new Float32Array(names.reduce((s, n) => s + w.get(n)!.length, 0));
      let o = 0;
      for (const n of names) {
        f.set(w.get(n)!, o);
        o += w.get(n)!.length;
      }
      return new Uint8Array(f.buffer);
    };
    await Deno.mkdir(out, { recursive: true });
    await Deno.writeFile(join(out, "weights.f32"), flat(await m.store.read("values")));
    await Deno.writeFile(join(out, "weights0.f32"), flat(initial!));
    await writeJson(out, "result.json", {
      world,
      writer: rank,
      names,
      losses,
      norms,
      samples: [...all],
      stats: dp?.lastStats ?? null,
    });
  }
  lossSum.dispose();
  m.store.destroy();
  await dp?.finalize();
}

// ------------------------------------------------------------------ train/loop.ts end to end

export function loopConfig(
  out: string,
  dataDir: string,
  devices: number,
  batch: number,
  steps: number,
): Record<string, unknown> {
  return {
    name: "ddp-test",
    seed: 1,
    quiet: true,
    do_test: false,
    hydra: { run: { dir: join(out, "run") } },
    callbacks: {
      model_checkpoint: {
        dirpath: join(out, "checkpoints"),
        every_n_train_steps: steps,
        save_top_k: 1,
      },
    },
    trainer: {
      devices,
      max_steps: steps,
      accumulate_grad_batches: 2,
      val_check_interval: 100000,
      log_every_n_steps: 1,
      gradient_clip_val: 0.5,
      precision: 32,
    },
    datamodule: {
      dataset_name: "wikitext",
      dataset_config_name: "wikitext-103-v1",
      data_dir: dataDir,
      max_length: SEQ_LEN,
      batch_size: batch,
      batch_size_eval: 4,
      num_workers: 0,
    },
    model: { config: { ...TINY_MODEL, vocab_size: 50257 } },
    train: {
      optimizer: { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1 },
      optimizer_param_grouping: GROUPING,
      scheduler: {},
    },
  };
}

async function loop(
  out: string,
  devices: number,
  batch: number,
  dataDir: string,
  steps: number,
): Promise<void> {
  const path = "../../train/loop.ts";
  const { train } = await import(path) as {
    train: (cfg: unknown, o: { cwd: string; log: (s: string) => void }) => Promise<unknown>;
  };
  const lines: string[] = [];
  await train(loopConfig(out, dataDir, devices, batch, steps), {
    cwd: out,
    log: (s) => lines.push(s),
  });
  // train() logs only on rank 0 (others get a no-op logger); whoever logged writes the file
  if (lines.length) {
    const rank = Deno.env.get("OMPI_COMM_WORLD_RANK") ?? "0";
    await Deno.writeTextFile(join(out, `log.rank${rank}.txt`), lines.join("\n") + "\n");
  }
}

// ------------------------------------------------------------------ main

if (import.meta.main) {
  const [mode, out, ...rest] = Deno.args;
  const n = rest.map(Number);
  try {
    if (mode === "primitives") await primitives(out);
    else if (mode === "model") await model(out, n[0], n[1], n[2], n[3]);
    else if (mode === "loop") await loop(out, n[0], n[1], rest[2], n[3]);
    else throw new Error(`unknown mode ${mode}`);
  } catch (e) {
    console.error(`rank ${Deno.env.get("OMPI_COMM_WORLD_RANK") ?? "-"}: ${(e as Error).stack}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}
