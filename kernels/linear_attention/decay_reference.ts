/**
 * Float64 references of Based linear attention with the paper's fixed decay
 * (the reference's `notebooks/03-31-decay.ipynb` and `based/models/gpt.py`
 * `DecayClass`): per head h, r_h = 1 − 2^(c0 − h) (γ_h = ln r_h),
 * M_h[i, j] = r_h^(i−j) for j ≤ i, each row optionally divided by
 * √(Σ_{j≤i} M_h[i, j]) (`decay_denom`); the numerator's scores are multiplied by
 * M, the denominator is left undecayed:
 *
 *   y_i = σ_i · Σ_{j≤i} r^(i−j) A_ij v_j / (Σ_{j≤i} A_ij + ε),
 *   σ_i = 1 or (Σ_{n=0}^{i} r^n)^(−1/2) = ((1 − r^(i+1)) / (1 − r))^(−1/2).
 *
 * The row sum is a geometric series, so σ_i is closed-form in the position and
 * the recurrent view needs no extra state: kv ← r·kv + v φ(k)ᵀ, ks ← ks + φ(k),
 * y_t = σ_t (kv φ(q_t)) / (φ(q_t)·ks + ε).
 *
 * Three forms, same layout as reference.ts (q, k: [B, L, H, F], v, y:
 * [B, L, H, D], den: [B, L, H]): the definition in the scores (with its
 * analytic backward), the chunked form (a decayed state carried across chunks
 * plus the decayed diagonal block) and the recurrent form.
 */
import {
  featureWidth,
  type LaForward,
  type LaGrads,
  type LaShape,
  taylorFeatureMap,
} from "./reference.ts";

type F64 = Float64Array;

export interface DecayOptions {
  /** decay_const c0: r_h = 1 − 2^(c0 − h); must be < 0 */
  c0: number;
  /** decay_denom: divide each row of M by √(its sum) */
  denom: boolean;
}

/** r_h = 1 − 2^(c0 − h). */
export function decayRate(c0: number, h: number): number {
  return 1 - 2 ** (c0 - h);
}

/** M_h[i, i − n] = r_h^n, as exp(n·ln r) (ln r by log1p: exact for r near 1). */
export function decayWeight(c0: number, h: number, n: number): number {
  return Math.exp(n * Math.log1p(-(2 ** (c0 - h))));
}

/** σ_i: 1, or (Σ_{n=0}^{i} r^n)^(−1/2) = ((1 − r^(i+1)) / (1 − r))^(−1/2) (expm1: no cancellation). */
export function decayRowScale(o: DecayOptions, h: number, i: number): number {
  if (!o.denom) return 1;
  const a = 2 ** (o.c0 - h);
  const sum = -Math.expm1((i + 1) * Math.log1p(-a)) / a;
  return 1 / Math.sqrt(sum);
}

const idx = (s: LaShape, b: number, l: number, h: number, X: number) =>
  ((b * s.L + l) * s.H + h) * X;

/** The definition, in the scores s_ij = q_i·k_j/√F, A = 1 + s + s²/2. */
export function decayReference(
  q: F64,
  k: F64,
  v: F64,
  s: LaShape,
  o: DecayOptions,
  eps = 1e-12,
): LaForward {
  const { B, L, H, F, D } = s;
  const y = new Float64Array(B * L * H * D), den = new Float64Array(B * L * H);
  const sc = 1 / Math.sqrt(F);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < L; i++) {
        const num = new Float64Array(D);
        let z = 0;
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let f = 0; f < F; f++) dot += q[idx(s, b, i, h, F) + f] * k[idx(s, b, j, h, F) + f];
          const sv = dot * sc, A = 1 + sv + 0.5 * sv * sv, m = decayWeight(o.c0, h, i - j);
          z += A;
          for (let d = 0; d < D; d++) num[d] += m * A * v[idx(s, b, j, h, D) + d];
        }
        den[(b * L + i) * H + h] = z;
        const r = decayRowScale(o, h, i) / (z + eps);
        for (let d = 0; d < D; d++) y[idx(s, b, i, h, D) + d] = num[d] * r;
      }
    }
  }
  return { y, den };
}

/**
 * The gradient of decayReference: with go_i = σ_i gy_i/(z_i + ε),
 * gz_i = −(gy_i·y_i)/(z_i + ε), dA_ij = r^(i−j)(go_i·v_j) + gz_i,
 * dv_j = Σ_{i≥j} r^(i−j) A_ij go_i, ds = dA (1 + s), dq_i = Σ_j ds_ij k_j/√F,
 * dk_j = Σ_i ds_ij q_i/√F.
 */
export function decayReferenceBackward(
  q: F64,
  k: F64,
  v: F64,
  dy: F64,
  s: LaShape,
  o: DecayOptions,
  eps = 1e-12,
): LaGrads {
  const { B, L, H, F, D } = s;
  const { y, den } = decayReference(q, k, v, s, o, eps);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const sc = 1 / Math.sqrt(F);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < L; i++) {
        const zi = den[(b * L + i) * H + h] + eps;
        const yi = idx(s, b, i, h, D);
        let gyy = 0;
        for (let d = 0; d < D; d++) gyy += dy[yi + d] * y[yi + d];
        const gz = -gyy / zi, gs = decayRowScale(o, h, i) / zi;
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let f = 0; f < F; f++) dot += q[idx(s, b, i, h, F) + f] * k[idx(s, b, j, h, F) + f];
          const sv = dot * sc, A = 1 + sv + 0.5 * sv * sv, m = decayWeight(o.c0, h, i - j);
          let gov = 0;
          for (let d = 0; d < D; d++) {
            const go = gs * dy[yi + d];
            gov += go * v[idx(s, b, j, h, D) + d];
            dv[idx(s, b, j, h, D) + d] += m * A * go;
          }
          const ds = (m * gov + gz) * (1 + sv) * sc;
          for (let f = 0; f < F; f++) {
            dq[idx(s, b, i, h, F) + f] += ds * k[idx(s, b, j, h, F) + f];
            dk[idx(s, b, j, h, F) + f] += ds * q[idx(s, b, i, h, F) + f];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * The chunked form: per chunk starting at c, S_c = Σ_{j<c} r^(c−1−j) φ(k_j) v_jᵀ
 * and Z_c = Σ_{j<c} φ(k_j); row i of the chunk takes r^(i−c+1) φ(q_i)ᵀS_c and
 * φ(q_i)·Z_c plus the decayed diagonal block; S_{c+C} = r^C S_c + Σ_{chunk}
 * r^(c+C−1−j) φ(k_j) v_jᵀ.
 */
export function decayChunked(
  q: F64,
  k: F64,
  v: F64,
  s: LaShape,
  o: DecayOptions,
  eps = 1e-12,
  chunk = 64,
): LaForward {
  const { B, L, H, F, D } = s;
  const W = featureWidth(F);
  const y = new Float64Array(B * L * H * D), den = new Float64Array(B * L * H);
  const Q = taylorFeatureMap(q, F), K = taylorFeatureMap(k, F);
  const fi = (b: number, l: number, h: number) => ((b * L + l) * H + h) * W;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const S = new Float64Array(W * D), Z = new Float64Array(W);
      for (let c = 0; c < L; c += chunk) {
        const end = Math.min(L, c + chunk);
        for (let i = c; i < end; i++) {
          const num = new Float64Array(D);
          let z = 0;
          const dec = decayWeight(o.c0, h, i - c + 1);
          for (let e = 0; e < W; e++) {
            const qe = Q[fi(b, i, h) + e];
            z += qe * Z[e];
            for (let d = 0; d < D; d++) num[d] += dec * qe * S[e * D + d];
          }
          for (let j = c; j <= i; j++) {
            let A = 0;
            for (let e = 0; e < W; e++) A += Q[fi(b, i, h) + e] * K[fi(b, j, h) + e];
            z += A;
            const m = decayWeight(o.c0, h, i - j);
            for (let d = 0; d < D; d++) num[d] += m * A * v[idx(s, b, j, h, D) + d];
          }
          den[(b * L + i) * H + h] = z;
          const r = decayRowScale(o, h, i) / (z + eps);
          for (let d = 0; d < D; d++) y[idx(s, b, i, h, D) + d] = num[d] * r;
        }
        const carry = decayWeight(o.c0, h, end - c);
        for (let e = 0; e < W * D; e++) S[e] *= carry;
        for (let j = c; j < end; j++) {
          const m = decayWeight(o.c0, h, end - 1 - j);
          for (let e = 0; e < W; e++) {
            const ke = K[fi(b, j, h) + e];
            Z[e] += ke;
            for (let d = 0; d < D; d++) S[e * D + d] += m * ke * v[idx(s, b, j, h, D) + d];
          }
        }
      }
    }
  }
  return { y, den };
}

/** The recurrent form: kv ← r·kv + v φ(k)ᵀ, ks ← ks + φ(k), y_t = σ_t (kv φ(q_t))/(φ(q_t)·ks + ε). */
export function decayRecurrent(
  q: F64,
  k: F64,
  v: F64,
  s: LaShape,
  o: DecayOptions,
  eps = 1e-12,
): { y: F64; kv: F64; ks: F64 } {
  const { B, L, H, F, D } = s;
  const W = featureWidth(F);
  const y = new Float64Array(B * L * H * D);
  const kv = new Float64Array(B * H * D * W), ks = new Float64Array(B * H * W);
  const Q = taylorFeatureMap(q, F), K = taylorFeatureMap(k, F);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const r = decayRate(o.c0, h);
      const kvo = (b * H + h) * D * W, kso = (b * H + h) * W;
      for (let t = 0; t < L; t++) {
        const qo = ((b * L + t) * H + h) * W;
        let z = 0;
        for (let e = 0; e < W; e++) {
          ks[kso + e] += K[qo + e];
          z += Q[qo + e] * ks[kso + e];
        }
        const sig = decayRowScale(o, h, t) / (z + eps);
        for (let d = 0; d < D; d++) {
          const vt = v[idx(s, b, t, h, D) + d];
          let num = 0;
          for (let e = 0; e < W; e++) {
            const x = r * kv[kvo + d * W + e] + vt * K[qo + e];
            kv[kvo + d * W + e] = x;
            num += x * Q[qo + e];
          }
          y[idx(s, b, t, h, D) + d] = num * sig;
        }
      }
    }
  }
  return { y, kv, ks };
}

/** decay_proj's per-row scale: y'[r, :] = p[r]·y[r, :] over rows r = (b, i, h); its gradient. */
export function headScaleReference(y: F64, p: F64, D: number): F64 {
  return y.map((x, i) => p[Math.floor(i / D)] * x);
}

export function headScaleBackward(y: F64, p: F64, g: F64, D: number): { gy: F64; gp: F64 } {
  const gp = new Float64Array(p.length);
  for (let i = 0; i < y.length; i++) gp[Math.floor(i / D)] += g[i] * y[i];
  return { gy: headScaleReference(g, p, D), gp };
}
