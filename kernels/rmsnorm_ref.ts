/**
 * Float64 CPU reference of RMSNorm (`based/ops/triton/layer_norm.py::rms_norm_ref`) over the last
 * axis of a [rows, N] array, and of the fused residual add + norm.
 */
export type F64 = Float64Array;

/** y = x · r · w with r = (mean(x²) + eps)^-1/2 per row; also returns r. */
export function rmsNorm(x: F64, w: F64, eps = 1e-5): { y: F64; r: F64 } {
  const n = w.length, rows = x.length / n;
  const y = new Float64Array(x.length), r = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < n; j++) ss += x[i * n + j] ** 2;
    r[i] = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) y[i * n + j] = x[i * n + j] * r[i] * w[j];
  }
  return { y, r };
}

/** gw = Σ_rows gy ⊙ x ⊙ r; with u = gy ⊙ w: gx = r·u − x·r³·(Σ_j u_j x_j)/N. */
export function rmsNormBackward(x: F64, w: F64, gy: F64, eps = 1e-5): { gx: F64; gw: F64 } {
  const n = w.length, rows = x.length / n;
  const { r } = rmsNorm(x, w, eps);
  const gx = new Float64Array(x.length), gw = new Float64Array(n);
  for (let i = 0; i < rows; i++) {
    let d = 0;
    for (let j = 0; j < n; j++) d += gy[i * n + j] * w[j] * x[i * n + j];
    const c = (r[i] ** 3 * d) / n;
    for (let j = 0; j < n; j++) {
      const k = i * n + j;
      gx[k] = r[i] * gy[k] * w[j] - x[k] * c;
      gw[j] += gy[k] * x[k] * r[i];
    }
  }
  return { gx, gw };
}

/** s = x + residual (x when residual is null), y = RMSNorm(s). */
export function addRmsNorm(x: F64, residual: F64 | null, w: F64, eps = 1e-5): { s: F64; y: F64 } {
  const s = residual ? x.map((v, i) => v + residual[i]) : Float64Array.from(x);
  return { s, y: rmsNorm(s, w, eps).y };
}

/**
 * Gradients of addRmsNorm given the gradients at s and at y (either may be
 * null): gx = gresidual = gs + RMSNorm'ₓ(gy), gw from gy.
 */
export function addRmsNormBackward(
  x: F64,
  residual: F64 | null,
  w: F64,
  gs: F64 | null,
  gy: F64 | null,
  eps = 1e-5,
): { gx: F64; gw: F64 } {
  const { s } = addRmsNorm(x, residual, w, eps);
  const gx = new Float64Array(x.length), gw = new Float64Array(w.length);
  if (gy) {
    const b = rmsNormBackward(s, w, gy, eps);
    gx.set(b.gx);
    gw.set(b.gw);
  }
  if (gs) { for (let i = 0; i < gx.length; i++) gx[i] += gs[i]; }
  return { gx, gw };
}
