/**
 * The one entry point for GEMMs with f16 inputs and f32 accumulation and
 * output (mixed precision): out = alpha·op(A)·op(B) + beta·out + bias, with
 * exactly the options and semantics of `gemm` (kernels/matmul/), A and B
 * f16, out and bias f32.
 *
 * Two paths, one result up to f16 partial-sum rounding:
 * - packed (GPUs): the packed-f16 kernel of kernels/matmul/ (f16 × f16
 *   multiply-adds into f16 partial sums, flushed into f32 accumulators every
 *   `flush` ≤ F16_MAX_FLUSH products; kernels/matmul/f16.ts);
 * - widened (CPU adapters, where the packed kernel runs ~25x slower than the
 *   f32 one): the operands' element ranges are widened to f32 and the f32
 *   `gemm` runs; f16 × f16 products are exact in f32, so this is an f16-input,
 *   f32-accumulate GEMM with no f16 partial sums.
 * `BASED_F16_GEMM=packed|widened` forces one (tests of the packed path on CPU).
 * Tolerances take the partial-sum length from gemmF16PartialSums(engine).
 */

import type { Tensor } from "../../tensor/tensor.ts";
import { gemm, type GemmOptions } from "../matmul/mod.ts";
import { castToF32 } from "./cast.ts";
import type { Engine } from "../../tensor/engine.ts";

/** The longest run of products the packed kernel sums in f16 (its configs' `flush` bound). */
export const F16_MAX_FLUSH = 64;

/** Whether gemmF16 runs the packed-f16 kernel on this engine (else it widens to f32). */
export function packedF16Gemm(e: Engine): boolean {
  const force = Deno.env.get("BASED_F16_GEMM");
  if (force === "packed") return true;
  if (force === "widened") return false;
  return !e.info.isFallback;
}

/** Products summed in f16 before they reach an f32 accumulator on this engine (0: none). */
export function gemmF16PartialSums(e: Engine): number {
  return packedF16Gemm(e) ? F16_MAX_FLUSH : 0;
}

/** out (f32) = alpha·op(a)·op(b) + beta·out + bias; a, b f16. Raw (not recorded). */
export function gemmF16(out: Tensor, a: Tensor, b: Tensor, opts: GemmOptions = {}): void {
  if (a.dtype !== "f16" || b.dtype !== "f16") {
    throw new Error(`gemmF16: inputs ${a} and ${b} must be f16`);
  }
  if (out.dtype !== "f32") throw new Error(`gemmF16: out ${out} must be f32`);
  if (packedF16Gemm(out.engine)) {
    gemm(out, a, b, opts);
    return;
  }
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
