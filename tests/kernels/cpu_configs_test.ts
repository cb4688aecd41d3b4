/**
 * Kernel configurations of CPU adapters compile fast. Mesa's llvmpipe (under
 * lavapipe and under GL) compiles a kernel when it is first dispatched, and
 * its compile time grows with the unrolled code: the GEMM's inner product is
 * unrolled over bk × tm × tn/4 vec4 FMAs per K tile. Measured with
 * dev/compile_wgsl.ts (2 cores, MESA_SHADER_CACHE_DISABLE=true): 64×64×16
 * t8×8 (256 FMAs) 21 s on GL, 1.5 s on lavapipe; 64×64×8 t8×8 (128) 4.7 s and
 * 0.8 s, and as fast to run on the tiny model's shapes.
 */
import { ok as assert } from "node:assert/strict";
import { CONFIG_CPU } from "../../kernels/matmul/mod.ts";

Deno.test("cpu configs: the CPU adapters' GEMM unrolls at most 128 vec4 FMAs per K tile", () => {
  const fmas = CONFIG_CPU.bk * CONFIG_CPU.tm * (CONFIG_CPU.tn / 4);
  assert(fmas <= 128, `CONFIG_CPU unrolls ${fmas} FMAs`);
  // single-buffered: one tile of workgroup memory, no second unrolled copy of the inner product
  assert(CONFIG_CPU.stages === 1);
});
