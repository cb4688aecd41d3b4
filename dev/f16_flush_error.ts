/**
 * Lab: error of the f16 GEMM's arithmetic against a float64 reference, as a
 * function of the flush length L (f16 partial sums of L packed-f16 FMAs added
 * into f32 accumulators), beside the error that bf16 input rounding alone gives
 * (PyTorch autocast: bf16 inputs, f32 accumulation). Inputs uniform in [-1, 1).
 * Metric: rms(C - C64) / rms(C64), and max|C - C64| / rms(C64).
 *
 *   deno run dev/f16_flush_error.ts [K ...]
 */
const f16 = Math.f16round;
const f32 = Math.fround;
const bf16buf = new Float32Array(1), bf16u = new Uint32Array(bf16buf.buffer);
function bf16(x: number): number {
  bf16buf[0] = x;
  const u = bf16u[0];
  bf16u[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return bf16buf[0];
}
let s = 12345;
const rnd = () => {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return f32(s / 2 ** 31 - 1);
};
const Ks = Deno.args.length ? Deno.args.map(Number) : [1024, 4096, 16384];
const Ls = [4, 8, 16, 32, 64, 128];
const N = 400;
for (const K of Ks) {
  const rows: string[] = [];
  const err = new Map<string, { sq: number; max: number }>();
  let refSq = 0;
  const add = (k: string, d: number) => {
    const e = err.get(k) ?? { sq: 0, max: 0 };
    e.sq += d * d;
    e.max = Math.max(e.max, Math.abs(d));
    err.set(k, e);
  };
  for (let t = 0; t < N; t++) {
    const a = Array.from({ length: K }, rnd), b = Array.from({ length: K }, rnd);
    let ref = 0, refBf = 0, refF16 = 0;
    for (let k = 0; k < K; k++) {
      ref += a[k] * b[k];
      refBf += bf16(a[k]) * bf16(b[k]);
      refF16 += f16(a[k]) * f16(b[k]);
    }
    refSq += ref * ref;
    add("bf16 inputs, exact sum", refBf - ref);
    add("f16 inputs, exact sum", refF16 - ref);
    for (const L of Ls) {
      let acc = 0, h = 0;
      for (let k = 0; k < K; k++) {
        h = f16(f16(a[k]) * f16(b[k]) + h);
        if ((k + 1) % L === 0 || k === K - 1) {
          acc = f32(acc + h);
          h = 0;
        }
      }
      add(`f16 inputs, f16 partial sums flushed every ${L}`, acc - ref);
    }
  }
  const rms = Math.sqrt(refSq / N);
  for (const [k, e] of err) {
    rows.push(
      `${k.padEnd(48)} rms ${(Math.sqrt(e.sq / N) / rms).toExponential(2)}  max ${
        (e.max / rms).toExponential(2)
      }`,
    );
  }
  console.log(`K = ${K} (${N} dot products; relative to rms(C) = ${rms.toFixed(2)})`);
  console.log(rows.join("\n"));
}
