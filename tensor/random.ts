/**
 * Seeded random numbers for initialisation and data order: a 32-bit
 * mulberry32 stream (its whole state is one integer, so it is saved in
 * checkpoints), normals by Box-Muller.
 */
export class Random {
  #s: number;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** uniform in [0, 1) */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = 1 - this.next(); // (0, 1]
    const r = Math.sqrt(-2 * Math.log(u));
    const th = 2 * Math.PI * this.next();
    this.#spare = r * Math.sin(th);
    return r * Math.cos(th);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  fillNormal(a: Float32Array, std: number): Float32Array {
    for (let i = 0; i < a.length; i++) a[i] = this.normal() * std;
    return a;
  }
  fillUniform(a: Float32Array, lo: number, hi: number): Float32Array {
    for (let i = 0; i < a.length; i++) a[i] = lo + (hi - lo) * this.next();
    return a;
  }
  get state(): number {
    return this.#s;
  }
  set state(s: number) {
    this.#s = s >>> 0;
    this.#spare = null;
  }
}

/** A seed derived from a base seed and a string (stable across runs and platforms). */
export function deriveSeed(seed: number, label: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
  }
  return h;
}
