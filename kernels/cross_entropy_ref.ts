/**
 * Float64 CPU reference of the token cross-entropy (flash-attention v2.5.2
 * `flash_attn/losses/cross_entropy.py`, as `train/tasks/seq.py` uses it):
 * loss_t = logsumexp(z_t) − z_t[y_t], mean over the rows whose label is not
 * IGNORE_INDEX (−100, as PyTorch / flash-attn); gradient (softmax − onehot)/T.
 */
export type F64 = Float64Array;

export const IGNORE_INDEX = -100;

/** Per-row NLL (0 for ignored rows), the row logsumexp, the mean and the number of counted rows. */
export function crossEntropy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  V: number,
): { rowLoss: F64; lse: F64; loss: number; count: number } {
  const T = labels.length;
  const rowLoss = new Float64Array(T), lse = new Float64Array(T);
  let sum = 0, count = 0;
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[t * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[t * V + j] - m);
    lse[t] = m + Math.log(s);
    const y = labels[t];
    if (y === IGNORE_INDEX) continue;
    if (!(y >= 0 && y < V)) throw new Error(`crossEntropy ref: label ${y} outside [0, ${V})`);
    rowLoss[t] = lse[t] - logits[t * V + y];
    sum += rowLoss[t];
    count++;
  }
  return { rowLoss, lse, loss: sum / count, count };
}

/**
 * scale·(softmax(z_t) − onehot(y_t)) for every counted row, 0 for ignored rows.
 * The gradient of the mean loss times g is scale = g / count.
 */
export function crossEntropyGrad(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  V: number,
  scale: number,
): F64 {
  const T = labels.length;
  const { lse } = crossEntropy(logits, labels, V);
  const gz = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    if (labels[t] === IGNORE_INDEX) continue;
    for (let j = 0; j < V; j++) gz[t * V + j] = scale * Math.exp(logits[t * V + j] - lse[t]);
    gz[t * V + labels[t]] -= scale;
  }
  return gz;
}
