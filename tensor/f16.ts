/**
 * IEEE binary16 on the host: round-to-nearest-even encoding of float64/float32
 * values (overflow to ±Inf at 65520 and above, as IEEE rounding gives;
 * subnormals kept) and exact decoding: the reference of the GPU casts
 * (kernels/f16/cast.ts), which implement the same rounding in integer
 * arithmetic, so host and GPU agree bit for bit on f32 inputs.
 */

/** Largest finite f16. */
export const F16_MAX = 65504;
/** Unit roundoff of f16 (round to nearest): 2^-11. */
export const F16_EPS = 2 ** -11;
/** Smallest positive normal f16, 2^-14; below it values are subnormal, spaced 2^-24. */
export const F16_MIN_NORMAL = 2 ** -14;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The f16 bits of `x` rounded first to f32 (as the GPU sees it), then to f16 (nearest even). */
export function f16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x7f800000) return sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0);
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to infinity
  if (a >= 0x38800000) {
    const r = a - 0x38000000;
    return sign | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
  }
  if (a < 0x33000000) return sign; // below 2^-25 (2^-25 itself ties to even: zero)
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return sign | q;
}

/** The value of f16 bits `h` (exact). */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** `x` rounded to the nearest f16 (via f32), as a number. */
export function roundF16(x: number): number {
  return f16Value(f16Bits(x));
}
