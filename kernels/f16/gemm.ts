/**
 * The one entry point for GEMMs with f16 inputs and f32 accumulation and
 * output (mixed precision): out = alpha·op(A)·op(B) + beta·out + bias, with
 * exactly the options and semantics of `gemm` (kernels/matmul/), A and B
 * f16, out and bias f32.
 *
 * For now it widens the f16 operands (the element ranges the problem reads)
 * to f32 and calls the f32 `gemm`: f16 × f16 products are exact in f32, so
 * this is numerically an f16-input, f32-accumulate GEMM, and a packed-f16
 * kernel can replace the body without changing a caller. To swap in the
 * packed kernel of kernels/matmul/ (which takes f16 a and b itself): make the
 * body `gemm(out, a, b, opts)` and set GEMM_F16_PARTIAL_SUMS to the longest
 * run of products it sums in f16 before flushing into f32 (its config's
 * `flush`); tests/kernels/f16_test.ts widens its bound by that many f16
 * roundings.
 */

/** Products summed in f16 before they reach an f32 accumulator (0: f32 accumulation). */
export const GEMM_F16_PARTIAL_SUMS = 0;
import type { Tensor } from "../../tensor/tensor.ts";
import { gemm, type GemmOptions } from "../matmul/mod.ts";
import { castToF32 } from "./cast.ts";

/** out (f32) = alpha·op(a)·op(b) + beta·out + bias; a, b f16. Raw (not recorded). */
export function gemmF16(out: Tensor, a: Tensor, b: Tensor, opts: GemmOptions = {}): void {
  if (a.dtype !== "f16" || b.dtype !== "f16") {
    throw new Error(`gemmF16: inputs ${a} and ${b} must be f16`);
  }
  if (out.dtype !== "f32") throw new Error(`gemmF16: out ${out} must be f32`);
  const explicit = opts.m !== undefined && opts.n !== undefined && opts.k !== undefined;
  if (!explicit) {
    const a32 = castToF32(a), b32 = castToF32(b);
    gemm(out, a32, b32, opts);
    a32.dispose();
    b32.dispose();
    return;
  }
  const M = opts.m!, N = opts.n!, K = opts.k!, batch = opts.batch ?? 1;
  if (M === 0 || N === 0 || batch === 0) return;
  // only the elements the problem reads are widened
  const range = (t: Tensor, off: number, stride: number, size: number) => {
    const count = Math.max(1, Math.min(t.size - off, (batch - 1) * stride + size));
    return castToF32(t, { offset: off, count });
  };
  const a32 = range(a, opts.offsetA ?? 0, opts.strideA ?? 0, M * K);
  const b32 = range(b, opts.offsetB ?? 0, opts.strideB ?? 0, K * N);
  gemm(out, a32, b32, { ...opts, offsetA: 0, offsetB: 0 });
  a32.dispose();
  b32.dispose();
}
