/** The step profile's classes and their rates against measured limits (train/profile.ts). */
import assert from "node:assert";
import { formatProfile, kernelClass, profileClasses } from "../../train/profile.ts";

Deno.test("kernelClass: the kernels of a step fall into their classes", () => {
  const cases: [string, string][] = [
    ["gemm_64x64x32_t4x4_s2w_f32h2_NN_v444_f16", "GEMM, f16 inputs"],
    ["gemm_128x256x16_t8x16_s1w_NT_v444_bias", "GEMM, fp32"],
    ["gemm_splitk_reduce_v4_beta", "GEMM split-K sums"],
    ["la_chunk_state_f16", "linear attention"],
    ["swa_dq_d64_r32t16", "sliding-window attention"],
    ["conv1d_causal_gx_k3", "short convolution"],
    ["cast_f32_f16_flag", "f16 casts"],
    ["rmsnorm_bwd_v4_t128_k2_gx_gw_gs", "RMSNorm"],
    ["cross_entropy_rows_v4_grad", "cross-entropy"],
    ["adamw_clip", "AdamW + clipping"],
    ["clip_sumsq", "AdamW + clipping"],
    ["swiglu_f16_bwd", "SwiGLU"],
    ["ew_swiglu_v4", "SwiGLU"],
    ["layout_copy2_v4", "layout, rotary, embedding"],
    ["ew_accumulate_v4", "elementwise, reductions"],
    ["something_new", "other"],
  ];
  for (const [k, c] of cases) assert.strictEqual(kernelClass(k), c, k);
});

Deno.test("profileClasses: sums per class, rates against the limits, slowest first", () => {
  const p = [
    { kernel: "gemm_a_f16", count: 2, ms: 10, flops: 4e11, bytes: 1e9 },
    { kernel: "gemm_b_f16", count: 1, ms: 10, flops: 4e11, bytes: 1e9 },
    { kernel: "cast_f32_f16", count: 4, ms: 1, flops: 0, bytes: 2e9 },
    { kernel: "gemm_c_NN", count: 1, ms: 2, flops: 6e10, bytes: 1e8 },
  ];
  const c = profileClasses(p, { fp32TFlops: 60, f16TFlops: 100, copyTBps: 4 });
  assert.deepStrictEqual(c.map((x) => x.name), ["GEMM, f16 inputs", "GEMM, fp32", "f16 casts"]);
  assert.strictEqual(c[0].count, 3);
  assert(Math.abs(c[0].tflops! - 40) < 1e-9); // 8e11 FLOP in 20 ms
  assert(Math.abs(c[0].limit!.ratio - 0.4) < 1e-12);
  assert(Math.abs(c[1].tflops! - 30) < 1e-9);
  assert(Math.abs(c[1].limit!.ratio - 0.5) < 1e-12);
  assert.strictEqual(c[2].tflops, undefined);
  assert(Math.abs(c[2].gbps - 2000) < 1e-9); // 2 GB in 1 ms
  assert(Math.abs(c[2].limit!.ratio - 0.5) < 1e-12);
  // without measured limits: rates only
  assert.strictEqual(profileClasses(p)[0].limit, undefined);
  const text = formatProfile(p, { fp32TFlops: 60, f16TFlops: 100, copyTBps: 4 });
  assert.match(text, /GEMM, f16 inputs .* 40\.0 TFLOP\/s .*packed f16 FMA peak\): 0\.40/);
  assert.match(text, /f16 casts .* 2000 GB\/s .*copy\): 0\.50/);
});
