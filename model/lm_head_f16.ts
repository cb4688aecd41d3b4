/**
 * The tied LM head and loss under f16 mixed precision (model/lm_head.ts in
 * f16): the final hidden states y and the embedding E are rounded to f16 (E's
 * copy once per step), the logits are accumulated and kept in f32, the
 * cross-entropy (log-sum-exp, softmax) runs in f32, and its gradient is
 * multiplied by the loss scale as it is rounded to f16 for the two backward
 * GEMMs (dy = dlogits·E, dE += dlogitsᵀ·y, f32 accumulation). So every
 * gradient below the head carries the loss scale, which the optimizer
 * removes (optim/scaler.ts). Chunked over rows exactly like the fp32 head.
 */
import { isGradEnabled, leafGrad } from "../tensor/tape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { crossEntropyRows } from "../kernels/cross_entropy.ts";
import type { Autocast } from "../kernels/f16/autocast.ts";
import { gemmF16 } from "../kernels/f16/gemm.ts";
import { finishHeadLoss, headChunkRows } from "./lm_head.ts";

/** lmHeadLoss (model/lm_head.ts) in f16 mixed precision; same arguments and result. */
export function lmHeadLossF16(
  ac: Autocast,
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
  const y16 = ac.cast(y);
  const E16 = ac.weight(E);
  const rowLoss = e.empty([T], "f32", "per-token loss");
  const dy = training && y.requiresGrad
    ? e.empty([T, D], "f32", "gradient of the final hidden state")
    : null;
  const dE = training && E.requiresGrad ? leafGrad(E) : null;
  const logits = e.empty([Math.min(R, T), V], "f32", `logits chunk [${Math.min(R, T)}, ${V}]`);
  const dl16 = training ? e.empty([Math.min(R, T), V], "f16", "f16 logits gradient chunk") : null;
  for (let r0 = 0; r0 < T; r0 += R) {
    const rows = Math.min(R, T - r0);
    const lc = e.wrap(labels.buffer, labels.byteOffset + r0 * 4, [rows], "i32");
    const rc = e.wrap(rowLoss.buffer, rowLoss.byteOffset + r0 * 4, [rows]);
    const Lc = rows === logits.shape[0]
      ? logits
      : e.wrap(logits.buffer, logits.byteOffset, [rows, V]);
    gemmF16(Lc, y16, E16, { transB: true, m: rows, n: V, k: D, offsetA: r0 * D });
    crossEntropyRows(Lc, lc, rc, training ? { gradScale: opts.gradScale } : {});
    if (!dl16) continue;
    ac.castScaled(Lc, dl16, rows * V);
    if (dy) gemmF16(dy, dl16, E16, { m: rows, n: D, k: V, offsetOut: r0 * D });
    if (dE) gemmF16(dE, dl16, y16, { transA: true, m: V, n: D, k: rows, offsetB: r0 * D, beta: 1 });
  }
  logits.dispose();
  dl16?.dispose();
  y16.dispose();
  return finishHeadLoss("lm_head_loss_f16", rowLoss, y, E, dy, dE, training);
}

/** Full logits y·Eᵀ ([T, V], f32) from f16 inputs; evaluation of small batches. */
export function lmHeadLogitsF16(ac: Autocast, y: Tensor, E: Tensor): Tensor {
  const out = y.engine.empty([y.shape[0], E.shape[0]]);
  const y16 = ac.cast(y);
  gemmF16(out, y16, ac.weight(E), { transB: true, m: y.shape[0], n: E.shape[0], k: y.shape[1] });
  y16.dispose();
  return out;
}
