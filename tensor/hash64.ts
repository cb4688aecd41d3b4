/**
 * A fast non-cryptographic 64-bit checksum of bytes (two XXH32-style streams
 * with different seeds, four 32-bit lanes each), and the same pass telling
 * whether the bytes, read as f32, hold a NaN or Inf. Checkpoint files are
 * hashed with it: it detects changes made after writing (a flipped bit, an
 * edited header, a swapped file), not an attacker, who could rewrite the
 * checksum beside it too. SHA-256 through crypto.subtle measured 0.08 GB/s on
 * a 2-core machine (54 s for a 360M checkpoint); this runs at ~1 GB/s.
 */
const P1 = 0x9e3779b1, P2 = 0x85ebca77, P3 = 0xc2b2ae3d, P4 = 0x27d4eb2f, P5 = 0x165667b1;

const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));

function avalanche(h: number): number {
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface Hashed {
  /** 16 hex digits */
  hash: string;
  /** index (in f32 elements) of the first NaN / Inf when read as f32, or -1 */
  firstNonFinite: number;
}

/** The checksum of `bytes`; with `f32`, also the first non-finite f32 element. */
export function hash64(bytes: Uint8Array, f32 = false): Hashed {
  const b = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const n = b.length >>> 2;
  const w = new Uint32Array(b.buffer, b.byteOffset, n);
  let a0 = (P1 + P2) | 0, a1 = P2 | 0, a2 = 0, a3 = -P1 | 0; // seed 0
  let c0 = (P1 + P2 + 1) | 0, c1 = (P2 + 1) | 0, c2 = 1, c3 = (1 - P1) | 0; // seed 1
  let bad = -1;
  const n16 = n & ~3;
  for (let i = 0; i < n16; i += 4) {
    const x0 = w[i], x1 = w[i + 1], x2 = w[i + 2], x3 = w[i + 3];
    a0 = Math.imul(rotl((a0 + Math.imul(x0, P2)) | 0, 13), P1);
    a1 = Math.imul(rotl((a1 + Math.imul(x1, P2)) | 0, 13), P1);
    a2 = Math.imul(rotl((a2 + Math.imul(x2, P2)) | 0, 13), P1);
    a3 = Math.imul(rotl((a3 + Math.imul(x3, P2)) | 0, 13), P1);
    c0 = Math.imul(rotl((c0 + Math.imul(x0, P4)) | 0, 11), P3);
    c1 = Math.imul(rotl((c1 + Math.imul(x1, P4)) | 0, 11), P3);
    c2 = Math.imul(rotl((c2 + Math.imul(x2, P4)) | 0, 11), P3);
    c3 = Math.imul(rotl((c3 + Math.imul(x3, P4)) | 0, 11), P3);
    if (
      f32 && bad < 0 &&
      ((x0 & 0x7f800000) === 0x7f800000 || (x1 & 0x7f800000) === 0x7f800000 ||
        (x2 & 0x7f800000) === 0x7f800000 || (x3 & 0x7f800000) === 0x7f800000)
    ) {
      for (let j = i; j < i + 4; j++) if ((w[j] & 0x7f800000) === 0x7f800000 && bad < 0) bad = j;
    }
  }
  let h = (rotl(a0, 1) + rotl(a1, 7) + rotl(a2, 12) + rotl(a3, 18) + b.length) | 0;
  let g = (rotl(c0, 1) + rotl(c1, 7) + rotl(c2, 12) + rotl(c3, 18) + b.length) | 0;
  for (let i = n16; i < n; i++) {
    const x = w[i];
    if (f32 && bad < 0 && (x & 0x7f800000) === 0x7f800000) bad = i;
    h = Math.imul(rotl((h + Math.imul(x, P3)) | 0, 17), P4);
    g = Math.imul(rotl((g + Math.imul(x, P2)) | 0, 15), P1);
  }
  for (let i = n * 4; i < b.length; i++) {
    h = Math.imul(rotl((h + Math.imul(b[i], P5)) | 0, 11), P1);
    g = Math.imul(rotl((g + Math.imul(b[i], P1)) | 0, 13), P5);
  }
  const hex = (x: number) => avalanche(x).toString(16).padStart(8, "0");
  return { hash: hex(h) + hex(g ^ h), firstNonFinite: bad };
}
