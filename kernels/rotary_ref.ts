/**
 * Rotary position embedding (flash-attention v2.5.2 `flash_attn/layers/rotary.py`): the host
 * cos/sin tables, computed in f32 the way flash-attn does, and the float64 CPU reference of the
 * rotation. Non-interleaved (GPT-NeoX) halves: with x1 = x[0:r/2], x2 = x[r/2:r] (r = rotary dim),
 * out1 = x1·cos − x2·sin, out2 = x2·cos + x1·sin; dims ≥ r pass through.
 */
export type F64 = Float64Array;

/**
 * cos/sin tables [L, dim/2] for positions offset..offset+L−1, as flash-attn
 * v2.5.2 builds them in f32: inv_freq = 1 / base^(arange(0, dim, 2) / dim),
 * t = arange as f32, freqs = t·inv_freq rounded to f32, then cos / sin
 * (here of that f32 argument, correctly rounded; torch's f32 cos/sin differ
 * from it by at most one ulp).
 */
export function rotaryTables(
  L: number,
  dim: number,
  base = 10000,
  offset = 0,
): { cos: Float32Array; sin: Float32Array } {
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2) {
    throw new Error(`rotaryTables: rotary dim ${dim} is not a positive even number`);
  }
  const half = dim / 2;
  const fr = Math.fround;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = fr(1 / fr(Math.pow(base, fr(fr(2 * i) / dim))));
  const cos = new Float32Array(L * half), sin = new Float32Array(L * half);
  for (let l = 0; l < L; l++) {
    const t = fr(offset + l);
    for (let i = 0; i < half; i++) {
      const a = fr(t * inv[i]);
      cos[l * half + i] = Math.cos(a);
      sin[l * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/**
 * Rotates x viewed as [B, L, P, H, Dh]: parts p < nrot (q and k of a packed
 * qkv: nrot = 2 of P = 3; a plain [B, L, H, Dh]: P = nrot = 1) by the angle
 * of position l (tables [L, rd/2]); other parts and dims ≥ rd are copied.
 * `inverse` rotates by −θ (the backward).
 */
export function rotary(
  x: ArrayLike<number>,
  shape: { B: number; L: number; P: number; H: number; Dh: number },
  nrot: number,
  rd: number,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  inverse = false,
): F64 {
  const { B, L, P, H, Dh } = shape;
  const half = rd / 2, sg = inverse ? -1 : 1;
  const out = Float64Array.from(x);
  for (let b = 0; b < B; b++) {
    for (let l = 0; l < L; l++) {
      for (let p = 0; p < nrot; p++) {
        for (let h = 0; h < H; h++) {
          const o = (((b * L + l) * P + p) * H + h) * Dh;
          for (let i = 0; i < half; i++) {
            const c = cos[l * half + i], s = sg * sin[l * half + i];
            const x1 = x[o + i], x2 = x[o + i + half];
            out[o + i] = x1 * c - x2 * s;
            out[o + i + half] = x2 * c + x1 * s;
          }
        }
      }
    }
  }
  return out;
}
