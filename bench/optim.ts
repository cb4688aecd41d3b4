/**
 * One optimizer step over N parameters (default: Based-360m, 362,620,928
 * values in its two groups): GradClip.compute + AdamW.step, timed with
 * e.measure. Effective bandwidth counts AdamW's own traffic, 4 reads
 * (p, g, m, v) + 3 writes (p, m, v) of 4 bytes per parameter; the clip's extra
 * read of g (4 bytes per parameter) is in the time but not in those bytes.
 */
import type { Engine } from "../tensor/engine.ts";
import { type ParamSpec, ParamStore } from "../tensor/params.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import { median } from "./report.ts";

/** Based-360m group sizes (docs/reference.md, Training). */
const DECAY_360M = 311_063_552;
const NO_DECAY_360M = 51_557_376;
/** parameters per synthetic tensor (the 360m model's largest non-embedding tensors are 4M) */
const TENSOR = 1 << 22;

export interface OptimBenchResult {
  params: number;
  chunks: number;
  dispatches: number;
  /** GradClip.compute + AdamW.step (with clipping), ms */
  ms: number;
  /** AdamW.step alone (no clip), ms */
  adamMs: number;
  /** GradClip.compute alone, ms */
  clipMs: number;
  /** 28·N bytes / ms: the effective figure of the step with clipping */
  tbps: number;
  /** 28·N bytes / adamMs */
  adamTbps: number;
  /** bytes actually moved with clipping (32·N) / ms */
  actualTbps: number;
  itemsPerThread: number;
}

export async function benchOptim(
  e: Engine,
  opts: { params?: number; repeats?: number; itemsPerThread?: number } = {},
): Promise<OptimBenchResult> {
  const total = opts.params ?? DECAY_360M + NO_DECAY_360M;
  const decay = Math.round((total * DECAY_360M) / (DECAY_360M + NO_DECAY_360M));
  const groups: [string, number][] = [["decay", decay], ["no_decay", total - decay]];
  // one host buffer of random-ish values shared by every synthetic tensor
  const host = new Float32Array(Math.min(TENSOR, total));
  for (let i = 0; i < host.length; i++) host[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  const specs: ParamSpec[] = [];
  for (const [group, n] of groups) {
    for (let off = 0, k = 0; off < n; off += TENSOR, k++) {
      const size = Math.min(TENSOR, n - off);
      specs.push({ name: `${group}.${k}`, shape: [size], group, init: host.subarray(0, size) });
    }
  }
  const store = new ParamStore(e, specs, ["decay", "no_decay"]);
  const adam = new AdamW(store, { decay: { weightDecay: 0.1 }, no_decay: { weightDecay: 0 } }, {
    lr: 1e-6,
    betas: [0.9, 0.95],
    eps: 1e-8,
  }, { itemsPerThread: opts.itemsPerThread });
  const clip = new GradClip(store, 1.0);
  // non-zero gradients (never time zeros): the values themselves, scaled
  e.flush(); // the store's zeroGrads first
  for (let c = 0; c < store.values.length; c++) {
    const enc = e.device.createCommandEncoder();
    enc.copyBufferToBuffer(store.values[c], 0, store.grads[c], 0, store.chunkSizes[c] * 4);
    e.device.queue.submit([enc.finish()]);
  }
  const step = () => {
    clip.compute();
    adam.step(1e-6, { clip });
  };
  step(); // warm-up: pipelines, bind groups
  adam.step(1e-6);
  await e.sync();
  const reps = opts.repeats ?? 10;
  const inner = 3;
  const time = async (fn: () => void) => {
    const ts: number[] = [];
    for (let r = 0; r < reps; r++) {
      ts.push(
        (await e.measure(() => {
          for (let i = 0; i < inner; i++) fn();
        })) / inner,
      );
    }
    return median(ts);
  };
  const ms = await time(step);
  const adamMs = await time(() => adam.step(1e-6));
  const clipMs = await time(() => clip.compute());
  clip.computed = false;
  if (await clip.nonFinite()) throw new Error("optimizer benchmark: non-finite gradient norm");
  const n = store.count;
  const result: OptimBenchResult = {
    params: n,
    chunks: store.values.length,
    dispatches: adam.dispatchesPerStep + store.values.length + 1,
    ms,
    adamMs,
    clipMs,
    tbps: (28 * n) / (ms / 1e3) / 1e12,
    adamTbps: (28 * n) / (adamMs / 1e3) / 1e12,
    actualTbps: (32 * n) / (ms / 1e3) / 1e12,
    itemsPerThread: adam.itemsPerThread,
  };
  clip.destroy();
  adam.destroy();
  store.destroy();
  return result;
}
