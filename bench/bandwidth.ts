/**
 * Bandwidth-bound kernels, effective TB/s = the fewest bytes the op must move
 * (each input read once, each output written once) / GPU time: elementwise
 * add and SwiGLU, RMSNorm (the fused residual add + norm of a block, forward),
 * and the cross-entropy rows of the LM head (logits read, gradient written in
 * place). Inputs are random (never zeros); times are medians of timestamp
 * queries after a warm-up.
 */
import type { Engine } from "../tensor/engine.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { noGrad } from "../tensor/tape.ts";
import { add, swiglu } from "../kernels/elementwise.ts";
import { addRmsNorm } from "../kernels/rmsnorm.ts";
import { crossEntropyRows } from "../kernels/cross_entropy.ts";
import { median } from "./report.ts";
import { randomTensor } from "./random.ts";
import { Random } from "../tensor/random.ts";

export interface BandwidthRow {
  name: string;
  bytes: number;
  ms: number;
  tbps: number;
}

async function time(e: Engine, fn: () => void, reps = 7): Promise<number> {
  fn(); // warm-up (pipelines, pool)
  for (let i = 0; i < 20; i++) fn(); // keep the GPU busy before timing (clocks)
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) ts.push(await e.measure(fn));
  return median(ts);
}

export async function benchBandwidth(
  e: Engine,
  opts: { quick?: boolean } = {},
): Promise<BandwidthRow[]> {
  const rng = new Random(11);
  const rows: BandwidthRow[] = [];
  const tokens = opts.quick ? 512 : 16384;
  const out = (name: string, bytes: number, ms: number) =>
    rows.push({ name, bytes, ms, tbps: bytes / (ms * 1e-3) / 1e12 });
  await noGrad(async () => {
    // elementwise: 3 arrays of N floats
    {
      const N = tokens * 4096;
      const a = randomTensor(e, [N], 1), b = randomTensor(e, [N], 2);
      let y: Tensor | null = null;
      const ms = await time(e, () => {
        y?.dispose();
        y = add(a, b);
      });
      out(`add ${N.toLocaleString("en-US")} floats`, 12 * N, ms);
      const s = await time(e, () => {
        y?.dispose();
        y = swiglu(a, b);
      });
      out(`swiglu ${N.toLocaleString("en-US")} floats`, 12 * N, s);
      (y as Tensor | null)?.dispose();
      a.dispose();
      b.dispose();
    }
    // residual add + RMSNorm: read x, residual; write sum, normed (+ r per row)
    {
      const D = 1024;
      const x = randomTensor(e, [tokens, D], 3), res = randomTensor(e, [tokens, D], 4);
      const w = randomTensor(e, [D], 5);
      let o: Tensor[] = [];
      const ms = await time(e, () => {
        for (const t of o) t.dispose();
        o = addRmsNorm(x, res, w);
      });
      out(`residual add + RMSNorm ${tokens}x${D}`, 16 * tokens * D, ms);
      for (const t of [...o, x, res, w]) t.dispose();
    }
    // cross-entropy rows: read logits, write the gradient in place
    {
      const V = 50264,
        R = opts.quick ? 64 : Math.min(4096, Math.floor(e.maxBinding / (V * 4) / 64) * 64);
      const logits = randomTensor(e, [R, V], 6, 3);
      const labels = e.tensor(Int32Array.from({ length: R }, () => rng.int(50257)), [R], "i32");
      const loss = e.empty([R]);
      const ms = await time(e, () => crossEntropyRows(logits, labels, loss, { gradScale: 1 / R }));
      out(`cross-entropy rows ${R}x${V} (loss + in-place gradient)`, 8 * R * V, ms);
      for (const t of [logits, labels, loss]) t.dispose();
    }
  });
  e.pool.trim();
  return rows;
}
