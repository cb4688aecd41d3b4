/**
 * Float64 CPU references of Based linear attention (spec §2.6, §3) and the
 * Taylor feature map, forward and backward, one function per training view:
 *
 * - `reference` / `referenceBackward`: the definition and the §3.0 gradient,
 *   written directly in the scores s_ij (no feature map).
 * - `quadratic*` (§3.1): φ applied, A = tril(φ(q) φ(k)ᵀ), N = A V, the
 *   denominator φ(q)·cumsum φ(k); the backward of that graph plus φ's backward.
 * - `cumsum*` (§3.2): the causal dot product's running state S = Σ φ(k) vᵀ and
 *   the reverse scan R for the backward.
 * - `chunked*` (§3.3(b)): fused_chunk states H0/H1/H2, Z0/Z1/Z2 carried across
 *   chunks of `chunk` tokens, the two-sweep backward.
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

type HeadFwd = (q: F64, k: F64, v: F64, L: number, F: number, D: number) => {
  y: F64;
  den: F64;
};
type HeadBwd = (
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  L: number,
  F: number,
  D: number,
) => { dq: F64; dk: F64; dv: F64 };

function perHeadForward(q: F64, k: F64, v: F64, s: LaShape, f: HeadFwd): LaForward {
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

function perHeadBackward(q: F64, k: F64, v: F64, dy: F64, s: LaShape, f: HeadBwd): LaGrads {
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

/** gx_a = g1_a/F^¼ + Σ_b (g2_ab + g2_ba) x_b / (√2·√F) (spec §3.1). */
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

// ------------------------------------------------------------------ definition and §3.0

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

/** The §3.0 reference gradient of Σ y·dy. */
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

// ------------------------------------------------------------------ §3.1 quadratic

function quadHead(q: F64, k: F64, v: F64, L: number, F: number, D: number, eps: number) {
  const W = featureWidth(F);
  const Q = taylorFeatureMap(q, F), K = taylorFeatureMap(k, F);
  const A = new Float64Array(L * L);
  for (let i = 0; i < L; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let e = 0; e < W; e++) s += Q[i * W + e] * K[j * W + e];
      A[i * L + j] = s;
    }
  }
  const N = new Float64Array(L * D);
  for (let i = 0; i < L; i++) {
    for (let j = 0; j <= i; j++) {
      for (let d = 0; d < D; d++) N[i * D + d] += A[i * L + j] * v[j * D + d];
    }
  }
  const Kc = new Float64Array(L * W);
  for (let i = 0; i < L; i++) {
    for (let e = 0; e < W; e++) {
      Kc[i * W + e] = (i > 0 ? Kc[(i - 1) * W + e] : 0) + K[i * W + e];
    }
  }
  const den = new Float64Array(L), z = new Float64Array(L), y = new Float64Array(L * D);
  for (let i = 0; i < L; i++) {
    let s = 0;
    for (let e = 0; e < W; e++) s += Q[i * W + e] * Kc[i * W + e];
    den[i] = s;
    z[i] = 1 / (s + eps);
    for (let d = 0; d < D; d++) y[i * D + d] = N[i * D + d] * z[i];
  }
  return { Q, K, A, N, Kc, den, z, y };
}

/** §3.1: A = tril(φ(q) φ(k)ᵀ), y = (A v) / (φ(q)·cumsum φ(k) + ε). */
export function quadraticForward(q: F64, k: F64, v: F64, s: LaShape, eps = 1e-12): LaForward {
  return perHeadForward(q, k, v, s, (a, b, c, L, F, D) => {
    const r = quadHead(a, b, c, L, F, D, eps);
    return { y: r.y, den: r.den };
  });
}

/** The backward of the §3.1 graph (what autograd produces), then φ's backward. */
export function quadraticBackward(
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  s: LaShape,
  eps = 1e-12,
): LaGrads {
  return perHeadBackward(q, k, v, dy, s, (q, k, v, gy, L, F, D) => {
    const W = featureWidth(F);
    const { Q, K, A, N, Kc, z } = quadHead(q, k, v, L, F, D, eps);
    const gN = new Float64Array(L * D), gden = new Float64Array(L);
    for (let i = 0; i < L; i++) {
      let gyN = 0;
      for (let d = 0; d < D; d++) {
        gN[i * D + d] = gy[i * D + d] * z[i];
        gyN += gy[i * D + d] * N[i * D + d];
      }
      gden[i] = -gyN * z[i] * z[i];
    }
    const gA = new Float64Array(L * L);
    for (let i = 0; i < L; i++) {
      for (let j = 0; j <= i; j++) {
        let t = 0;
        for (let d = 0; d < D; d++) t += gN[i * D + d] * v[j * D + d];
        gA[i * L + j] = t;
      }
    }
    const dv = new Float64Array(L * D);
    for (let j = 0; j < L; j++) {
      for (let i = j; i < L; i++) {
        for (let d = 0; d < D; d++) dv[j * D + d] += A[i * L + j] * gN[i * D + d];
      }
    }
    const gQ = new Float64Array(L * W), gK = new Float64Array(L * W);
    for (let i = 0; i < L; i++) {
      for (let e = 0; e < W; e++) {
        let t = gden[i] * Kc[i * W + e];
        for (let j = 0; j <= i; j++) t += gA[i * L + j] * K[j * W + e];
        gQ[i * W + e] = t;
      }
    }
    // reverse cumulative sum of gden_i Q_i
    const rc = new Float64Array(W);
    for (let j = L - 1; j >= 0; j--) {
      for (let e = 0; e < W; e++) rc[e] += gden[j] * Q[j * W + e];
      for (let e = 0; e < W; e++) {
        let t = rc[e];
        for (let i = j; i < L; i++) t += gA[i * L + j] * Q[i * W + e];
        gK[j * W + e] = t;
      }
    }
    return {
      dq: taylorFeatureMapBackward(q, gQ, F),
      dk: taylorFeatureMapBackward(k, gK, F),
      dv,
    };
  });
}

// ------------------------------------------------------------------ §3.2 cumsum

function cumsumHead(q: F64, k: F64, v: F64, L: number, F: number, D: number, eps: number) {
  const W = featureWidth(F);
  const Q = taylorFeatureMap(q, F), K = taylorFeatureMap(k, F);
  const S = new Float64Array(W * D), Kc = new Float64Array(W);
  const num = new Float64Array(L * D), den = new Float64Array(L), z = new Float64Array(L);
  const y = new Float64Array(L * D);
  for (let i = 0; i < L; i++) {
    for (let e = 0; e < W; e++) {
      const ke = K[i * W + e];
      Kc[e] += ke;
      for (let d = 0; d < D; d++) S[e * D + d] += ke * v[i * D + d];
    }
    let dn = 0;
    for (let e = 0; e < W; e++) {
      const qe = Q[i * W + e];
      dn += qe * Kc[e];
      for (let d = 0; d < D; d++) num[i * D + d] += qe * S[e * D + d];
    }
    den[i] = dn;
    z[i] = 1 / (dn + eps);
    for (let d = 0; d < D; d++) y[i * D + d] = num[i * D + d] * z[i];
  }
  return { Q, K, num, den, z, y };
}

/** §3.2: num_i = S_iᵀ φ(q_i), S_i = Σ_{j≤i} φ(k_j) v_jᵀ; y = num / (φ(q)·cumsum φ(k) + ε). */
export function cumsumForward(q: F64, k: F64, v: F64, s: LaShape, eps = 1e-12): LaForward {
  return perHeadForward(q, k, v, s, (a, b, c, L, F, D) => {
    const r = cumsumHead(a, b, c, L, F, D, eps);
    return { y: r.y, den: r.den };
  });
}

/**
 * §3.2 backward: gQ_i = S_i g_i (forward scan), R_j = Σ_{i≥j} φ(q_i) g_iᵀ
 * (reverse scan), gK_j = R_j v_j, gV_j = R_jᵀ φ(k_j); the denominator's terms
 * gden_i cumsum φ(k) and the reverse cumsum of gden_i φ(q_i) added.
 */
export function cumsumBackward(
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  s: LaShape,
  eps = 1e-12,
): LaGrads {
  return perHeadBackward(q, k, v, dy, s, (q, k, v, gy, L, F, D) => {
    const W = featureWidth(F);
    const { Q, K, num, z } = cumsumHead(q, k, v, L, F, D, eps);
    const g = new Float64Array(L * D), gden = new Float64Array(L);
    for (let i = 0; i < L; i++) {
      let t = 0;
      for (let d = 0; d < D; d++) {
        g[i * D + d] = gy[i * D + d] * z[i];
        t += gy[i * D + d] * num[i * D + d];
      }
      gden[i] = -t * z[i] * z[i];
    }
    const gQ = new Float64Array(L * W), gK = new Float64Array(L * W);
    const dv = new Float64Array(L * D);
    const S = new Float64Array(W * D), Kc = new Float64Array(W);
    for (let i = 0; i < L; i++) {
      for (let e = 0; e < W; e++) {
        const ke = K[i * W + e];
        Kc[e] += ke;
        let t = 0;
        for (let d = 0; d < D; d++) {
          S[e * D + d] += ke * v[i * D + d];
          t += S[e * D + d] * g[i * D + d];
        }
        gQ[i * W + e] = t + gden[i] * Kc[e];
      }
    }
    const R = new Float64Array(W * D), Qr = new Float64Array(W);
    for (let j = L - 1; j >= 0; j--) {
      for (let e = 0; e < W; e++) {
        const qe = Q[j * W + e];
        Qr[e] += gden[j] * qe;
        let t = 0;
        for (let d = 0; d < D; d++) {
          R[e * D + d] += qe * g[j * D + d];
          t += R[e * D + d] * v[j * D + d];
        }
        gK[j * W + e] = t + Qr[e];
      }
      for (let d = 0; d < D; d++) {
        let t = 0;
        for (let e = 0; e < W; e++) t += R[e * D + d] * K[j * W + e];
        dv[j * D + d] = t;
      }
    }
    return {
      dq: taylorFeatureMapBackward(q, gQ, F),
      dk: taylorFeatureMapBackward(k, gK, F),
      dv,
    };
  });
}

// ------------------------------------------------------------------ §3.3(b) chunked

interface ChunkStates {
  H0: F64;
  H1: F64;
  H2: F64;
  Z0: number;
  Z1: F64;
  Z2: F64;
}

function newStates(F: number, D: number): ChunkStates {
  return {
    H0: new Float64Array(D),
    H1: new Float64Array(F * D),
    H2: new Float64Array(F * F * D),
    Z0: 0,
    Z1: new Float64Array(F),
    Z2: new Float64Array(F * F),
  };
}

/** o_i (D) and z_i of the §3.3(b) forward for every row, chunk by chunk. */
function chunkHead(
  q: F64,
  k: F64,
  v: F64,
  L: number,
  F: number,
  D: number,
  BT: number,
) {
  const c = 1 / Math.sqrt(F);
  const o = new Float64Array(L * D), z = new Float64Array(L);
  const st = newStates(F, D);
  const qt = new Float64Array(F);
  for (let c0 = 0; c0 < L; c0 += BT) {
    const c1 = Math.min(L, c0 + BT);
    for (let i = c0; i < c1; i++) {
      for (let f = 0; f < F; f++) qt[f] = c * q[i * F + f];
      // inter: o_i = H0 + q̃ᵀH1 + ½(q̃⊗q̃)ᵀH2; z_i likewise
      let zi = st.Z0;
      for (let a = 0; a < F; a++) zi += qt[a] * st.Z1[a];
      for (let a = 0; a < F; a++) {
        for (let b = 0; b < F; b++) zi += 0.5 * qt[a] * qt[b] * st.Z2[a * F + b];
      }
      for (let d = 0; d < D; d++) {
        let t = st.H0[d];
        for (let a = 0; a < F; a++) t += qt[a] * st.H1[a * D + d];
        for (let a = 0; a < F; a++) {
          for (let b = 0; b < F; b++) t += 0.5 * qt[a] * qt[b] * st.H2[(a * F + b) * D + d];
        }
        o[i * D + d] = t;
      }
      // intra
      for (let j = c0; j <= i; j++) {
        let sc = 0;
        for (let f = 0; f < F; f++) sc += qt[f] * k[j * F + f];
        const A = 1 + sc + 0.5 * sc * sc;
        zi += A;
        for (let d = 0; d < D; d++) o[i * D + d] += A * v[j * D + d];
      }
      z[i] = zi;
    }
    // update
    for (let j = c0; j < c1; j++) {
      st.Z0 += 1;
      for (let a = 0; a < F; a++) {
        const ka = k[j * F + a];
        st.Z1[a] += ka;
        for (let b = 0; b < F; b++) st.Z2[a * F + b] += ka * k[j * F + b];
      }
      for (let d = 0; d < D; d++) {
        const vd = v[j * D + d];
        st.H0[d] += vd;
        for (let a = 0; a < F; a++) {
          const ka = k[j * F + a];
          st.H1[a * D + d] += ka * vd;
          for (let b = 0; b < F; b++) st.H2[(a * F + b) * D + d] += ka * k[j * F + b] * vd;
        }
      }
    }
  }
  return { o, z };
}

/** §3.3(b) fused_chunk forward with chunk size `chunk` (fla uses 16). */
export function chunkedForward(
  q: F64,
  k: F64,
  v: F64,
  s: LaShape,
  eps = 1e-12,
  chunk = 16,
): LaForward {
  return perHeadForward(q, k, v, s, (q, k, v, L, F, D) => {
    const { o, z } = chunkHead(q, k, v, L, F, D, chunk);
    const y = new Float64Array(L * D);
    for (let i = 0; i < L; i++) {
      for (let d = 0; d < D; d++) y[i * D + d] = o[i * D + d] / (z[i] + eps);
    }
    return { y, den: z };
  });
}

/** §3.3(b) two-sweep backward (forward sweep: dq; reverse sweep: dk, dv). */
export function chunkedBackward(
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  s: LaShape,
  eps = 1e-12,
  chunk = 16,
): LaGrads {
  return perHeadBackward(q, k, v, dy, s, (q, k, v, gy, L, F, D) => {
    const c = 1 / Math.sqrt(F);
    const { o, z } = chunkHead(q, k, v, L, F, D, chunk);
    const go = new Float64Array(L * D), gz = new Float64Array(L);
    for (let i = 0; i < L; i++) {
      const zi = z[i] + eps;
      let t = 0;
      for (let d = 0; d < D; d++) {
        go[i * D + d] = gy[i * D + d] / zi;
        t += gy[i * D + d] * o[i * D + d];
      }
      gz[i] = -t / (zi * zi);
    }
    const qt = (i: number, f: number) => c * q[i * F + f];
    const G = (i: number, j: number) => {
      let t = gz[i];
      for (let d = 0; d < D; d++) t += go[i * D + d] * v[j * D + d];
      return t;
    };
    const sij = (i: number, j: number) => {
      let t = 0;
      for (let f = 0; f < F; f++) t += qt(i, f) * k[j * F + f];
      return t;
    };
    const dq = new Float64Array(L * F), dk = new Float64Array(L * F);
    const dv = new Float64Array(L * D);
    // forward sweep
    const st = newStates(F, D);
    const M = new Float64Array(F * F);
    for (let c0 = 0; c0 < L; c0 += chunk) {
      const c1 = Math.min(L, c0 + chunk);
      for (let i = c0; i < c1; i++) {
        for (let ab = 0; ab < F * F; ab++) {
          let t = gz[i] * st.Z2[ab];
          for (let d = 0; d < D; d++) t += st.H2[ab * D + d] * go[i * D + d];
          M[ab] = 0.5 * t;
        }
        for (let a = 0; a < F; a++) {
          let t = gz[i] * st.Z1[a];
          for (let d = 0; d < D; d++) t += st.H1[a * D + d] * go[i * D + d];
          for (let b = 0; b < F; b++) t += (M[a * F + b] + M[b * F + a]) * qt(i, b);
          for (let j = c0; j <= i; j++) t += G(i, j) * (1 + sij(i, j)) * k[j * F + a];
          dq[i * F + a] = c * t;
        }
      }
      for (let j = c0; j < c1; j++) {
        for (let a = 0; a < F; a++) {
          const ka = k[j * F + a];
          st.Z1[a] += ka;
          for (let b = 0; b < F; b++) st.Z2[a * F + b] += ka * k[j * F + b];
          for (let d = 0; d < D; d++) {
            st.H1[a * D + d] += ka * v[j * D + d];
            for (let b = 0; b < F; b++) {
              st.H2[(a * F + b) * D + d] += ka * k[j * F + b] * v[j * D + d];
            }
          }
        }
      }
    }
    // reverse sweep: states of everything after the chunk
    const D0 = new Float64Array(D), D1 = new Float64Array(F * D), D2 = new Float64Array(F * F * D);
    const E1 = new Float64Array(F), E2 = new Float64Array(F * F);
    const N = new Float64Array(F * F);
    const nChunks = Math.ceil(L / chunk);
    for (let ci = nChunks - 1; ci >= 0; ci--) {
      const c0 = ci * chunk, c1 = Math.min(L, c0 + chunk);
      for (let j = c0; j < c1; j++) {
        for (let d = 0; d < D; d++) {
          let t = D0[d];
          for (let a = 0; a < F; a++) {
            const ka = k[j * F + a];
            t += D1[a * D + d] * ka;
            for (let b = 0; b < F; b++) t += D2[(a * F + b) * D + d] * ka * k[j * F + b];
          }
          for (let i = j; i < c1; i++) {
            const sc = sij(i, j);
            t += (1 + sc + 0.5 * sc * sc) * go[i * D + d];
          }
          dv[j * D + d] = t;
        }
        for (let ab = 0; ab < F * F; ab++) {
          let t = E2[ab];
          for (let d = 0; d < D; d++) t += D2[ab * D + d] * v[j * D + d];
          N[ab] = t;
        }
        for (let a = 0; a < F; a++) {
          let t = E1[a];
          for (let d = 0; d < D; d++) t += D1[a * D + d] * v[j * D + d];
          for (let b = 0; b < F; b++) t += (N[a * F + b] + N[b * F + a]) * k[j * F + b];
          for (let i = j; i < c1; i++) t += G(i, j) * (1 + sij(i, j)) * qt(i, a);
          dk[j * F + a] = t;
        }
      }
      for (let i = c0; i < c1; i++) {
        for (let a = 0; a < F; a++) {
          const qa = qt(i, a);
          E1[a] += gz[i] * qa;
          for (let b = 0; b < F; b++) E2[a * F + b] += 0.5 * gz[i] * qa * qt(i, b);
          for (let d = 0; d < D; d++) {
            D1[a * D + d] += qa * go[i * D + d];
            for (let b = 0; b < F; b++) {
              D2[(a * F + b) * D + d] += 0.5 * qa * qt(i, b) * go[i * D + d];
            }
          }
        }
        for (let d = 0; d < D; d++) D0[d] += go[i * D + d];
      }
    }
    return { dq, dk, dv };
  });
}

// ------------------------------------------------------------------ §3.5 recurrent

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
