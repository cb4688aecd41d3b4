/**
 * Tile configs of the f16-input GEMM (packed f16 FMAs, f16 partial sums
 * flushed into f32 every `flush` products): the default for large problems
 * and the autotuner's candidate space. Workgroup tiles hold f16, so at equal
 * bytes they can be twice as deep in K as the f32 ones; each thread keeps its
 * f32 accumulators plus half as many registers of f16 partial sums, so
 * register pressure (warps per SM) matters more than in f32: on the H200,
 * 4×4 or 4×8 outputs per thread beat 8×8 by 16% at 4096³ (BENCHMARKS.md).
 */
import type { MatmulConfig } from "./codegen.ts";

/**
 * Large problems without a tuning entry: 128×128, K tiles of 32, double-buffered, vec2 partial
 * sums flushed every 32 products (the most frequent winner of the H200 tuning, BENCHMARKS.md).
 */
export const CONFIG_F16_LARGE: MatmulConfig = {
  bm: 128,
  bn: 128,
  bk: 32,
  tm: 8,
  tn: 8,
  stages: 2,
  warp: true,
  splitK: 0,
  flush: 32,
  h2: true,
};

/**
 * Candidates (not yet checked against the adapter's limits): on CPU adapters
 * a few small tiles; on GPUs a curated list (tile shape, depth, buffering,
 * flush length 16/32/64), or with `full` the grid of them.
 */
export function f16Configs(cpu: boolean, full: boolean): MatmulConfig[] {
  const cfg = (
    [bm, bn, bk, tm, tn]: number[],
    stages: 1 | 2,
    warp: boolean,
    flush: number,
  ): MatmulConfig => ({ bm, bn, bk, tm, tn, stages, warp, splitK: 1, flush });
  if (cpu) {
    return [
      cfg([64, 64, 16, 8, 8], 1, false, 32),
      cfg([32, 32, 16, 4, 4], 1, false, 32),
      cfg([64, 64, 32, 8, 8], 1, false, 32),
    ];
  }
  if (!full) {
    // the winners of a first H200 tuning over 13 shapes x depths x flush lengths (BENCHMARKS.md),
    // each also with vec2 partial sums
    const list: [number[], 1 | 2, boolean, number][] = [
      [[128, 128, 32, 8, 8], 2, true, 64],
      [[128, 128, 64, 8, 8], 1, true, 64],
      [[128, 128, 32, 8, 8], 2, true, 32],
      [[256, 128, 16, 16, 8], 2, true, 32],
    ];
    const out = list.map(([t, s, w, f]) => cfg(t, s, w, f));
    for (const c of [...out]) out.push({ ...c, h2: true });
    out.push({ ...cfg([128, 256, 32, 8, 16], 1, true, 64), h2: true });
    // fewer registers per thread, more warps per SM: 4×4 and 4×8 outputs per thread measured
    // 43 TFLOP/s at 4096³ NT against 37 for 8×8 (dev/f16_probe.ts occupancy); not yet tuned
    // over the model's shapes
    out.push({ ...cfg([64, 64, 32, 4, 4], 2, true, 32), h2: true });
    out.push({ ...cfg([128, 128, 32, 4, 8], 2, true, 32), h2: true });
    out.push({ ...cfg([64, 64, 64, 4, 4], 1, true, 32), h2: true });
    out.push({ ...cfg([128, 128, 32, 4, 4], 2, true, 32), h2: true });
    return out;
  }
  const out: MatmulConfig[] = [];
  const tiles = [
    [128, 128, 8, 8],
    [128, 64, 8, 8],
    [64, 128, 8, 8],
    [64, 64, 8, 8],
    [128, 256, 8, 16],
    [256, 128, 16, 8],
    [64, 64, 4, 4],
    [128, 128, 4, 8],
    [128, 128, 4, 4],
  ];
  for (const [bm, bn, tm, tn] of tiles) {
    for (const bk of [16, 32, 64]) {
      for (const stages of [2, 1] as const) {
        for (const flush of [16, 32, 64]) {
          for (const h2 of [false, true]) {
            out.push({ ...cfg([bm, bn, bk, tm, tn], stages, true, flush), h2 });
          }
        }
      }
    }
  }
  return out;
}
