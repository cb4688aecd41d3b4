/**
 * Float64 CPU references of Based linear attention (docs/reference.md, Linear
 * attention) and the Taylor feature map, forward and backward; the training
 * views' own float64 algorithms are in reference_views.ts:
 *
 * - `reference` / `referenceBackward`: the definition and the reference gradient,
 *   written directly in the scores s_ij (no feature map).
 * - `quadratic*` (`LinearAttention.parallel_forward`): φ applied, A = tril(φ(q) φ(k)ᵀ), N = A V,
 *   the denominator φ(q)·cumsum φ(k); the backward of that graph plus φ's backward.
 * - `cumsum*` (`train/csrc/causal_dot_prod/causal_attention.py`): the causal dot product's running
 *   state S = Σ φ(k) vᵀ and the reverse scan R for the backward.
 * - `chunked*` (flash-linear-attention `fla/ops/based/chunk_fuse.py`): fused_chunk states H0/H1/H2,
 *   Z0/Z1/Z2 carried across chunks of `chunk` tokens, the two-sweep backward.
 *
 * Layout: token-major like the GPU ops, q, k: [B, L, H, F], v, y: [B, L, H, D],
 * den (Σ_j A_ij, without ε): [B, L, H].
 */
export type F64 = Float64Array;

export interface LaShape {
  B: number;
  L: number;
  H: number;
  F: number;
  D: number;
}

export interface LaForward {
  y: F64;
  den: F64;
}

export interface LaGrads {
  dq: F64;
  dk: F64;
  dv: F64;
}

/** Width of the Taylor feature map: 1 + F + F². */
export const featureWidth = (F: number): number => 1 + F + F * F;

// ------------------------------------------------------------------ layout helpers

/** [B, L, H, X] -> per (b, h) dense [L, X]. */
function gatherHead(x: F64, s: LaShape, b: number, h: number, X: number): F64 {
  const out = new Float64Array(s.L * X);
  for (let l = 0; l < s.L; l++) {
    const src = ((b * s.L + l) * s.H + h) * X;
    for (let i = 0; i < X; i++) out[l * X + i] = x[src + i];
  }
  return out;
}

function scatterHead(dst: F64, x: F64, s: LaShape, b: number, h: number, X: number): void {
  for (let l = 0; l < s.L; l++) {
    const o = ((b * s.L + l) * s.H + h) * X;
    for (let i = 0; i < X; i++) dst[o + i] = x[l * X + i];
  }
}

/** (B, A, C, X) -> (B, C, A, X): swaps axes 1 and 2 (fixtures are (B, H, L, ·)). */
export function swapAxes12(x: ArrayLike<number>, shape: readonly number[]): F64 {
  const [B, A, C, X] = shape;
  const out = new Float64Array(B * A * C * X);
  for (let b = 0; b < B; b++) {
    for (let a = 0; a < A; a++) {
      for (let c = 0; c < C; c++) {
        const src = ((b * A + a) * C + c) * X, dst = ((b * C + c) * A + a) * X;
        for (let i = 0; i < X; i++) out[dst + i] = x[src + i];
      }
    }
  }
  return out;
}

export type HeadFwd = (q: F64, k: F64, v: F64, L: number, F: number, D: number) => {
  y: F64;
  den: F64;
};
export type HeadBwd = (
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  L: number,
  F: number,
  D: number,
) => { dq: F64; dk: F64; dv: F64 };

export function perHeadForward(q: F64, k: F64, v: F64, s: LaShape, f: HeadFwd): LaForward {
  const y = new Float64Array(s.B * s.L * s.H * s.D);
  const den = new Float64Array(s.B * s.L * s.H);
  for (let b = 0; b < s.B; b++) {
    for (let h = 0; h < s.H; h++) {
      const r = f(
        gatherHead(q, s, b, h, s.F),
        gatherHead(k, s, b, h, s.F),
        gatherHead(v, s, b, h, s.D),
        s.L,
        s.F,
        s.D,
      );
      scatterHead(y, r.y, s, b, h, s.D);
      scatterHead(den, r.den, s, b, h, 1);
    }
  }
  return { y, den };
}

export function perHeadBackward(q: F64, k: F64, v: F64, dy: F64, s: LaShape, f: HeadBwd): LaGrads {
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let b = 0; b < s.B; b++) {
    for (let h = 0; h < s.H; h++) {
      const r = f(
        gatherHead(q, s, b, h, s.F),
        gatherHead(k, s, b, h, s.F),
        gatherHead(v, s, b, h, s.D),
        gatherHead(dy, s, b, h, s.D),
        s.L,
        s.F,
        s.D,
      );
      scatterHead(dq, r.dq, s, b, h, s.F);
      scatterHead(dk, r.dk, s, b, h, s.F);
      scatterHead(dv, r.dv, s, b, h, s.D);
    }
  }
  return { dq, dk, dv };
}

// ------------------------------------------------------------------ feature map

/** φ(x) = [1, x/F^¼, vec(x xᵀ)/(√2·√F)] over the last axis (width F -> 1+F+F²). */
export function taylorFeatureMap(x: F64, F: number): F64 {
  const n = x.length / F, W = featureWidth(F);
  const r4 = Math.pow(F, 0.25), r2 = Math.SQRT2 * Math.sqrt(F);
  const out = new Float64Array(n * W);
  for (let t = 0; t < n; t++) {
    const o = t * W, xo = t * F;
    out[o] = 1;
    for (let a = 0; a < F; a++) out[o + 1 + a] = x[xo + a] / r4;
    for (let a = 0; a < F; a++) {
      for (let b = 0; b < F; b++) out[o + 1 + F + a * F + b] = (x[xo + a] * x[xo + b]) / r2;
    }
  }
  return out;
}

/** gx_a = g1_a/F^¼ + Σ_b (g2_ab + g2_ba) x_b / (√2·√F). */
export function taylorFeatureMapBackward(x: F64, g: F64, F: number): F64 {
  const n = x.length / F, W = featureWidth(F);
  const r4 = Math.pow(F, 0.25), r2 = Math.SQRT2 * Math.sqrt(F);
  const gx = new Float64Array(x.length);
  for (let t = 0; t < n; t++) {
    const o = t * W, xo = t * F;
    for (let a = 0; a < F; a++) {
      let s = g[o + 1 + a] / r4;
      for (let b = 0; b < F; b++) {
        s += ((g[o + 1 + F + a * F + b] + g[o + 1 + F + b * F + a]) * x[xo + b]) / r2;
      }
      gx[xo + a] = s;
    }
  }
  return gx;
}

// ------------------------------------------------------------------ definition and gradient

function refHead(q: F64, k: F64, v: F64, L: number, F: number, D: number, eps: number) {
  const c = 1 / Math.sqrt(F);
  const o = new Float64Array(L * D), den = new Float64Array(L), y = new Float64Array(L * D);
  for (let i = 0; i < L; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let f = 0; f < F; f++) s += q[i * F + f] * k[j * F + f];
      s *= c;
      const A = 1 + s + 0.5 * s * s;
      den[i] += A;
      for (let d = 0; d < D; d++) o[i * D + d] += A * v[j * D + d];
    }
    for (let d = 0; d < D; d++) y[i * D + d] = o[i * D + d] / (den[i] + eps);
  }
  return { y, den, o };
}

/** y_i = (Σ_{j≤i} A_ij v_j) / (Σ_{j≤i} A_ij + ε), A = 1 + s + s²/2, s = q·k/√F. */
export function reference(q: F64, k: F64, v: F64, s: LaShape, eps = 1e-12): LaForward {
  return perHeadForward(q, k, v, s, (a, b, c, L, F, D) => refHead(a, b, c, L, F, D, eps));
}

/** The reference gradient of Σ y·dy (docs/reference.md, Linear attention). */
export function referenceBackward(
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  s: LaShape,
  eps = 1e-12,
): LaGrads {
  return perHeadBackward(q, k, v, dy, s, (q, k, v, gy, L, F, D) => {
    const c = 1 / Math.sqrt(F);
    const { o, den } = refHead(q, k, v, L, F, D, eps);
    const dq = new Float64Array(L * F), dk = new Float64Array(L * F);
    const dv = new Float64Array(L * D);
    for (let i = 0; i < L; i++) {
      const zi = den[i] + eps;
      let gyo = 0;
      for (let d = 0; d < D; d++) gyo += gy[i * D + d] * o[i * D + d];
      const gz = -gyo / (zi * zi);
      for (let j = 0; j <= i; j++) {
        let sc = 0, gov = 0;
        for (let f = 0; f < F; f++) sc += q[i * F + f] * k[j * F + f];
        sc *= c;
        for (let d = 0; d < D; d++) gov += gy[i * D + d] * v[j * D + d];
        const A = 1 + sc + 0.5 * sc * sc;
        const G = gov / zi + gz;
        const dS = G * (1 + sc);
        for (let d = 0; d < D; d++) dv[j * D + d] += (A * gy[i * D + d]) / zi;
        for (let f = 0; f < F; f++) {
          dq[i * F + f] += c * dS * k[j * F + f];
          dk[j * F + f] += c * dS * q[i * F + f];
        }
      }
    }
    return { dq, dk, dv };
  });
}

// ------------------------------------------------------------------ recurrent

/**
 * Recurrent view: from an empty state, per token t: kv += v_t φ(k_t)ᵀ,
 * ks += φ(k_t), y_t = (kv φ(q_t)) / (φ(q_t)·ks + ε). Returns y and the final
 * state (kv: [B, H, D, W], ks: [B, H, W], W = 1+F+F²).
 */
export function recurrent(
  q: F64,
  k: F64,
  v: F64,
  s: LaShape,
  eps = 1e-12,
): { y: F64; kv: F64; ks: F64 } {
  const W = featureWidth(s.F);
  const y = new Float64Array(s.B * s.L * s.H * s.D);
  const kv = new Float64Array(s.B * s.H * s.D * W), ks = new Float64Array(s.B * s.H * W);
  for (let b = 0; b < s.B; b++) {
    for (let h = 0; h < s.H; h++) {
      const Q = taylorFeatureMap(gatherHead(q, s, b, h, s.F), s.F);
      const K = taylorFeatureMap(gatherHead(k, s, b, h, s.F), s.F);
      const V = gatherHead(v, s, b, h, s.D);
      const kvo = (b * s.H + h) * s.D * W, kso = (b * s.H + h) * W;
      for (let t = 0; t < s.L; t++) {
        let den = 0;
        for (let e = 0; e < W; e++) {
          ks[kso + e] += K[t * W + e];
          den += Q[t * W + e] * ks[kso + e];
        }
        for (let d = 0; d < s.D; d++) {
          let num = 0;
          for (let e = 0; e < W; e++) {
            kv[kvo + d * W + e] += V[t * s.D + d] * K[t * W + e];
            num += kv[kvo + d * W + e] * Q[t * W + e];
          }
          y[((b * s.L + t) * s.H + h) * s.D + d] = num / (den + eps);
        }
      }
    }
  }
  return { y, kv, ks };
}
