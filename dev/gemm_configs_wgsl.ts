/**
 * Lab probe: writes the WGSL of one GEMM variant for several tile configs into
 * DIR, named for dev/compile_wgsl.ts (which times each compile on a backend).
 *   deno run -A dev/gemm_configs_wgsl.ts DIR
 */
import { defineKernel } from "../tensor/engine.ts";
import { configName, GEMM_PARAMS, genGemm } from "../kernels/matmul/codegen.ts";
import type { MatmulConfig, MatmulVariant } from "../kernels/matmul/codegen.ts";

const dir = Deno.args[0];
await Deno.mkdir(dir, { recursive: true });
const v: MatmulVariant = {
  transA: false,
  transB: true,
  vecA: 4,
  vecB: 4,
  vecC: 4,
  beta: false,
  bias: false,
};
const cfgs: [number, number, number, number, number, 1 | 2][] = [
  [64, 64, 16, 8, 8, 1],
  [64, 64, 8, 8, 8, 1],
  [32, 32, 16, 4, 4, 1],
  [32, 32, 8, 4, 4, 1],
  [64, 64, 8, 4, 4, 1],
  [16, 16, 16, 4, 4, 1],
  [32, 32, 4, 4, 4, 1],
];
for (const [bm, bn, bk, tm, tn, stages] of cfgs) {
  const c: MatmulConfig = { bm, bn, bk, tm, tn, stages, warp: false, splitK: 1 };
  const k = defineKernel({
    name: "g",
    params: GEMM_PARAMS,
    bindings: {
      A: { access: "read", type: "array<vec4<f32>>" },
      B: { access: "read", type: "array<vec4<f32>>" },
      C: { access: "rw", type: "array<vec4<f32>>" },
    },
    code: genGemm(c, v),
  });
  await Deno.writeTextFile(`${dir}/gemm_${configName(c)}_b4.wgsl`, k.source);
}
