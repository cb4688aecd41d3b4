/**
 * Lab: where the f16 GEMM's time goes, at 4096³ NT on this adapter: the same
 * tile in f32, in f16 with vec4 or vec2 partial sums, flushed every 64 products
 * or (unusable error, a measure of the flush's cost) never.
 *
 *   deno run -A dev/f16_probe.ts
 */
import { initEngine } from "../tensor/engine.ts";
import { timeGemm } from "../bench/matmul.ts";
import { configName, type MatmulConfig } from "../kernels/matmul/mod.ts";

const e = await initEngine();
const base: MatmulConfig = {
  bm: 128,
  bn: 128,
  bk: 32,
  tm: 8,
  tn: 8,
  stages: 2,
  warp: true,
  splitK: 1,
};
const s = { m: 4096, n: 4096, k: 4096, transA: false, transB: true, batch: 1 };
const runs: [string, MatmulConfig, boolean][] = [
  ["f32", { ...base, bk: 16 }, false],
  ["f16 vec4 flush 64", { ...base, flush: 64 }, true],
  ["f16 vec2 flush 64", { ...base, flush: 64, h2: true }, true],
  ["f16 vec4 no flush", { ...base, flush: 4096 }, true],
  ["f16 vec2 no flush", { ...base, flush: 4096, h2: true }, true],
  [
    "f16 vec2 flush 64, 8x16/thread",
    { ...base, bn: 256, tn: 16, stages: 1, flush: 64, h2: true },
    true,
  ],
];
// `occupancy`: fewer registers per thread (4×8 / 8×4 outputs), so more warps fit an SM
const occupancy: [string, MatmulConfig, boolean][] = [
  ["f16 128x128 t4x8 (512 threads)", { ...base, tm: 4, flush: 32, h2: true }, true],
  ["f16 64x128 t4x8", { ...base, bm: 64, tm: 4, flush: 32, h2: true }, true],
  ["f16 128x64 t8x4", { ...base, bn: 64, tn: 4, flush: 32, h2: true }, true],
  ["f16 64x64 t4x4", { ...base, bm: 64, bn: 64, tm: 4, tn: 4, flush: 32, h2: true }, true],
  ["f16 128x128 t8x8 (reference)", { ...base, flush: 32, h2: true }, true],
  ["f32 128x128 t4x8 (512 threads)", { ...base, bk: 16, tm: 4 }, false],
];
for (const [what, config, f16] of Deno.args[0] === "occupancy" ? occupancy : runs) {
  try {
    const r = await timeGemm(e, { ...s, f16 }, { config, repeats: 3 });
    console.log(
      `probe ${what.padEnd(32)} ${configName(config).padEnd(28)} ${r.tflops.toFixed(1)} TFLOP/s`,
    );
  } catch (err) {
    console.log(`probe ${what}: ${(err as Error).message.slice(0, 200)}`);
  }
}
