/**
 * Float64 CPU reference of the causal depthwise convolution of BaseConv
 * (`based/models/mixers/convolution.py::BaseConv`'s ShortConvolution) over x [B, L, C] with
 * PyTorch's depthwise weight [C, 1, K]: c[t, ch] = Σ_k w[ch, k]·x[t + k − (K−1), ch] + bias[ch], x
 * = 0 before t = 0.
 */
export type F64 = Float64Array;

export interface ConvShape {
  B: number;
  L: number;
  C: number;
  K: number;
}

export function causalConv1d(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  s: ConvShape,
): F64 {
  const { B, L, C, K } = s;
  const y = new Float64Array(B * L * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      for (let ch = 0; ch < C; ch++) {
        let acc = bias ? bias[ch] : 0;
        for (let k = 0; k < K; k++) {
          const src = t + k - (K - 1);
          if (src >= 0) acc += w[ch * K + k] * x[(b * L + src) * C + ch];
        }
        y[(b * L + t) * C + ch] = acc;
      }
    }
  }
  return y;
}

/**
 * gx[s, ch] = Σ_k w[ch, k]·gy[s + (K−1) − k, ch] (terms past L dropped),
 * gw[ch, k] = Σ_{b,t} gy[t, ch]·x[t + k − (K−1), ch], gb[ch] = Σ_{b,t} gy[t, ch].
 */
export function causalConv1dBackward(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  gy: ArrayLike<number>,
  s: ConvShape,
): { gx: F64; gw: F64; gb: F64 } {
  const { B, L, C, K } = s;
  const gx = new Float64Array(B * L * C), gw = new Float64Array(C * K), gb = new Float64Array(C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      for (let ch = 0; ch < C; ch++) {
        const g = gy[(b * L + t) * C + ch];
        gb[ch] += g;
        for (let k = 0; k < K; k++) {
          const src = t + k - (K - 1);
          if (src < 0) continue;
          const i = (b * L + src) * C + ch;
          gx[i] += w[ch * K + k] * g;
          gw[ch * K + k] += g * x[i];
        }
      }
    }
  }
  return { gx, gw, gb };
}
