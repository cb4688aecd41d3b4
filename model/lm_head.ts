/**
 * The tied LM head and the loss, fused and chunked over rows: logits of a
 * chunk of rows are formed, turned into per-row losses and (when training)
 * into their gradient in place, and consumed at once (dy = dlogits·E and
 * dE += dlogitsᵀ·y), so the [tokens × vocabulary] logits never exist whole
 * (3.3 GB at 16,384 tokens × 50,264, over WebGPU's 2 GiB binding limit).
 * Because the gradient is formed in the forward pass, this op must be the
 * root of backward, and its gradient scale is fixed when it runs.
 */
import { ACCUMULATED, isGradEnabled, leafGrad, noGrad, record } from "../tensor/tape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { gemm } from "../kernels/matmul/mod.ts";
import { crossEntropyRows } from "../kernels/cross_entropy.ts";
import { sumAll } from "../kernels/reduce.ts";
import { scale } from "../kernels/elementwise.ts";

/** Rows per chunk: keeps the logits chunk under ~1/2 of the max binding, rows a multiple of 64. */
export function headChunkRows(maxBinding: number, vocab: number, rows: number): number {
  const fit = Math.floor(maxBinding / 2 / (vocab * 4) / 64) * 64;
  return Math.max(64, Math.min(fit, Math.ceil(rows / 64) * 64, 8192));
}

/**
 * Mean cross-entropy of `labels` under logits = y·Eᵀ. y: [T, D], E: [V, D],
 * labels: i32 [T] (-100 = ignored). `gradScale` (training): the gradient
 * of the returned loss is taken as this factor times d(sum of row losses)
 * (pass 1/T for a plain mean, 1/(T·accumulation) under accumulation).
 */
export function lmHeadLoss(
  y: Tensor,
  E: Tensor,
  labels: Tensor,
  opts: { gradScale?: number; chunkRows?: number } = {},
): Tensor {
  const e = y.engine;
  const [T, D] = y.shape;
  const V = E.shape[0];
  const training = isGradEnabled() && (y.requiresGrad || E.requiresGrad);
  if (training && opts.gradScale === undefined) {
    throw new Error("lmHeadLoss: gradScale is required when gradients are recorded");
  }
  const R = opts.chunkRows ?? headChunkRows(e.maxBinding, V, T);
  const rowLoss = e.empty([T], "f32", "per-token loss");
  const dy = training && y.requiresGrad
    ? e.empty([T, D], "f32", "gradient of the final hidden state")
    : null;
  const dE = training && E.requiresGrad ? leafGrad(E) : null;
  const logits = e.empty([Math.min(R, T), V], "f32", `logits chunk [${Math.min(R, T)}, ${V}]`);
  for (let r0 = 0; r0 < T; r0 += R) {
    const rows = Math.min(R, T - r0);
    const yc = e.wrap(y.buffer, y.byteOffset + r0 * D * 4, [rows, D]);
    const lc = e.wrap(labels.buffer, labels.byteOffset + r0 * 4, [rows], "i32");
    const rc = e.wrap(rowLoss.buffer, rowLoss.byteOffset + r0 * 4, [rows]);
    const Lc = rows === logits.shape[0]
      ? logits
      : e.wrap(logits.buffer, logits.byteOffset, [rows, V]);
    gemm(Lc, yc, E, { transB: true });
    crossEntropyRows(Lc, lc, rc, training ? { gradScale: opts.gradScale } : {});
    if (dy) gemm(e.wrap(dy.buffer, dy.byteOffset + r0 * D * 4, [rows, D]), Lc, E);
    if (dE) gemm(dE, Lc, yc, { transA: true, beta: 1 });
  }
  logits.dispose();
  return finishHeadLoss("lm_head_loss", rowLoss, y, E, dy, dE, training);
}

/**
 * The head's common end: the mean of the per-row losses (rowLoss is
 * consumed), and when training the tape record whose backward hands on the
 * dy formed in the forward pass (dE was accumulated into E's gradient).
 */
export function finishHeadLoss(
  name: string,
  rowLoss: Tensor,
  y: Tensor,
  E: Tensor,
  dy: Tensor | null,
  dE: Tensor | null,
  training: boolean,
): Tensor {
  const loss = noGrad(() => {
    const s = sumAll(rowLoss);
    const m = scale(s, 1 / y.shape[0]);
    s.dispose();
    return m;
  });
  rowLoss.dispose();
  if (training) {
    record(name, [y, E], [loss], dy ? [dy] : [], (_g, saved) => [
      dy ? saved[0].ref() : null,
      dE ? ACCUMULATED : null,
    ]);
  }
  dy?.dispose();
  return loss;
}

/** Full logits y·Eᵀ ([T, V]); for evaluation of small batches and tests. */
export function lmHeadLogits(y: Tensor, E: Tensor): Tensor {
  const out = y.engine.empty([y.shape[0], E.shape[0]]);
  gemm(out, y, E, { transB: true });
  return out;
}
