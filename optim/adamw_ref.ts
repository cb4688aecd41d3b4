/**
 * Float64 CPU references of the optimizer math (tests): the AdamW update of
 * apex FusedAdam `adam_w_mode` (= torch AdamW) and the global gradient norm
 * and clip coefficient of torch `clip_grad_norm_`.
 */

export interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * One AdamW step in place on float64 arrays, `t` = step number from 1,
 * gradients multiplied by `coef` first (clipping):
 * m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
 * p −= lr·((m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + eps) + wd·p).
 */
export function adamwStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  h: AdamHyper,
  t: number,
  coef = 1,
): void {
  const bc1 = 1 - h.beta1 ** t, bc2 = 1 - h.beta2 ** t;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * coef;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
    const upd = m[i] / bc1 / (Math.sqrt(v[i] / bc2) + h.eps) + h.weightDecay * p[i];
    p[i] = p[i] - h.lr * upd;
  }
}

/** ||all gradients||₂ in float64. */
export function globalNormRef(grads: Iterable<ArrayLike<number>>): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.sqrt(s);
}

/** torch clip_grad_norm_: coef = min(1, max_norm / (total + 1e-6)). */
export function clipCoefRef(total: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (total + 1e-6));
}
