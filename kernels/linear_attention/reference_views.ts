/**
 * Float64 CPU references of the training views of linear attention, one pair
 * (forward, backward) per view; the definition itself is reference.ts.
 */
import {
  type F64,
  featureWidth,
  type LaForward,
  type LaGrads,
  type LaShape,
  perHeadBackward,
  perHeadForward,
  taylorFeatureMap,
  taylorFeatureMapBackward,
} from "./reference.ts";

// ------------------------------------------------------------------ quadratic

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

/**
 * `LinearAttention.parallel_forward` (quadratic): A = tril(φ(q) φ(k)ᵀ), y = (A v) / (φ(q)·cumsum
 * φ(k) + ε).
 */
export function quadraticForward(q: F64, k: F64, v: F64, s: LaShape, eps = 1e-12): LaForward {
  return perHeadForward(q, k, v, s, (a, b, c, L, F, D) => {
    const r = quadHead(a, b, c, L, F, D, eps);
    return { y: r.y, den: r.den };
  });
}

/** The backward of the quadratic graph (what autograd produces), then φ's backward. */
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

// ------------------------------------------------------------------ cumsum

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

/**
 * `CausalDotProduct` (linear): num_i = S_iᵀ φ(q_i), S_i = Σ_{j≤i} φ(k_j) v_jᵀ; y = num /
 * (φ(q)·cumsum φ(k) + ε).
 */
export function cumsumForward(q: F64, k: F64, v: F64, s: LaShape, eps = 1e-12): LaForward {
  return perHeadForward(q, k, v, s, (a, b, c, L, F, D) => {
    const r = cumsumHead(a, b, c, L, F, D, eps);
    return { y: r.y, den: r.den };
  });
}

/**
 * `CausalDotProduct` backward: gQ_i = S_i g_i (forward scan), R_j = Σ_{i≥j} φ(q_i) g_iᵀ
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

// ------------------------------------------------------------------ chunked (fla fused_chunk)

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

/** o_i (D) and z_i of the fused_chunk forward for every row, chunk by chunk. */
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

/** `fla/ops/based/chunk_fuse.py` fused_chunk forward with chunk size `chunk` (fla uses 16). */
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

/** fused_chunk's two-sweep backward (forward sweep: dq; reverse sweep: dk, dv). */
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
