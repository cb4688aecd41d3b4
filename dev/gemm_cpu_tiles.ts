/**
 * Lab probe: run time of the tiny model's GEMM shapes (batch 4 x 128 tokens)
 * under a few tile configs on this process's backend (first call, which
 * compiles, excluded), to choose the configs of CPU adapters.
 *   DENO_WEBGPU_BACKEND=gl deno run -A dev/gemm_cpu_tiles.ts
 */
import { initEngine } from "../tensor/engine.ts";
import { timeGemm } from "../bench/matmul.ts";
import type { MatmulConfig } from "../kernels/matmul/mod.ts";

const e = await initEngine();
const cfg = (bm: number, bn: number, bk: number, tm: number, tn: number): MatmulConfig => ({
  bm,
  bn,
  bk,
  tm,
  tn,
  stages: 1,
  warp: false,
  splitK: 1,
});
const configs = [cfg(64, 64, 16, 8, 8), cfg(64, 64, 8, 8, 8), cfg(32, 32, 8, 4, 4)];
const T = 512, V = 50264, D = 128;
const shapes: [string, number, number, number, boolean, boolean][] = [
  ["lm_head fwd y·Eᵀ", T, V, D, false, true],
  ["lm_head dy g·E", T, D, V, false, false],
  ["lm_head dE gᵀ·y", V, D, T, true, false],
  ["fc1 fwd", T, 512, D, false, true],
  ["fc1 dW", 512, D, T, true, false],
];
for (const [name, m, n, k, transA, transB] of shapes) {
  const row: string[] = [];
  for (const config of configs) {
    const r = await timeGemm(e, { m, n, k, transA, transB, batch: 1 }, {
      config,
      repeats: 2,
      checks: 4,
      targetMs: 1,
    });
    row.push(`${r.config} ${r.ms.toFixed(1)} ms`);
  }
  console.log(`${name.padEnd(18)} ${row.join(" | ")}`);
}
