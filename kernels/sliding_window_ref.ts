/**
 * Float64 CPU reference of sliding-window causal softmax attention (SlidingAttention,
 * flash-attention's window rule): query i attends keys max(0, i − floor(W/2)) ≤ j ≤ i with scores
 * scale·q_i·k_j (q, k already rotated). Packed input qkv: [B, L, 3, H, Dh];
 * output [B, L, H, Dh]; the backward returns the packed gradient.
 */
export type F64 = Float64Array;

export interface SwaShape {
  B: number;
  L: number;
  H: number;
  Dh: number;
}

/** Keys per query side of a config window W (flash-attn window = (W // 2, 0)). */
export const windowLeft = (window: number): number => Math.floor(window / 2);

const qkvIndex = (s: SwaShape, b: number, l: number, part: number, h: number) =>
  (((b * s.L + l) * 3 + part) * s.H + h) * s.Dh;
const outIndex = (s: SwaShape, b: number, l: number, h: number) => ((b * s.L + l) * s.H + h) * s.Dh;

/** Softmax rows of one query: [start, probabilities over keys start..i]. */
function probs(
  qkv: F64,
  s: SwaShape,
  b: number,
  h: number,
  i: number,
  left: number,
  scale: number,
): [number, F64, number] {
  const j0 = Math.max(0, i - left);
  const sc = new Float64Array(i - j0 + 1);
  const qo = qkvIndex(s, b, i, 0, h);
  let m = -Infinity;
  for (let j = j0; j <= i; j++) {
    const ko = qkvIndex(s, b, j, 1, h);
    let t = 0;
    for (let d = 0; d < s.Dh; d++) t += qkv[qo + d] * qkv[ko + d];
    sc[j - j0] = scale * t;
    m = Math.max(m, sc[j - j0]);
  }
  let sum = 0;
  for (let t = 0; t < sc.length; t++) sum += sc[t] = Math.exp(sc[t] - m);
  for (let t = 0; t < sc.length; t++) sc[t] /= sum;
  return [j0, sc, m + Math.log(sum)];
}

/** O = softmax(scale·q kᵀ over the window) v; also the per-row logsumexp [B, L, H]. */
export function slidingWindowAttention(
  qkv: F64,
  s: SwaShape,
  window: number,
  scale = s.Dh ** -0.5,
): { out: F64; lse: F64 } {
  const left = windowLeft(window);
  const out = new Float64Array(s.B * s.L * s.H * s.Dh), lse = new Float64Array(s.B * s.L * s.H);
  for (let b = 0; b < s.B; b++) {
    for (let h = 0; h < s.H; h++) {
      for (let i = 0; i < s.L; i++) {
        const [j0, p, l] = probs(qkv, s, b, h, i, left, scale);
        lse[(b * s.L + i) * s.H + h] = l;
        const oo = outIndex(s, b, i, h);
        for (let j = j0; j <= i; j++) {
          const vo = qkvIndex(s, b, j, 2, h);
          for (let d = 0; d < s.Dh; d++) out[oo + d] += p[j - j0] * qkv[vo + d];
        }
      }
    }
  }
  return { out, lse };
}

/**
 * Gradients (docs/reference.md): gV = Pᵀ gO, gP = gO Vᵀ, gS_ij = P_ij (gP_ij − Σ_d gO_id O_id),
 * gq = scale·gS k, gk = scale·gSᵀ q; returned packed [B, L, 3, H, Dh].
 */
export function slidingWindowBackward(
  qkv: F64,
  dout: F64,
  s: SwaShape,
  window: number,
  scale = s.Dh ** -0.5,
): F64 {
  const left = windowLeft(window);
  const { out } = slidingWindowAttention(qkv, s, window, scale);
  const g = new Float64Array(qkv.length);
  for (let b = 0; b < s.B; b++) {
    for (let h = 0; h < s.H; h++) {
      for (let i = 0; i < s.L; i++) {
        const [j0, p] = probs(qkv, s, b, h, i, left, scale);
        const oo = outIndex(s, b, i, h), qo = qkvIndex(s, b, i, 0, h);
        let delta = 0;
        for (let d = 0; d < s.Dh; d++) delta += dout[oo + d] * out[oo + d];
        for (let j = j0; j <= i; j++) {
          const ko = qkvIndex(s, b, j, 1, h), vo = qkvIndex(s, b, j, 2, h);
          const pij = p[j - j0];
          let gp = 0;
          for (let d = 0; d < s.Dh; d++) {
            gp += dout[oo + d] * qkv[vo + d];
            g[vo + d] += pij * dout[oo + d];
          }
          const gs = pij * (gp - delta);
          for (let d = 0; d < s.Dh; d++) {
            g[qo + d] += scale * gs * qkv[ko + d];
            g[ko + d] += scale * gs * qkv[qo + d];
          }
        }
      }
    }
  }
  return g;
}
