/**
 * Which tile config a GEMM runs: the default configs, the heuristic on the
 * shape and the adapter, the tuning table (`setMatmulConfig`, `matmulTuning`),
 * the candidate lists for an autotuner and the split-K slice count. Moved out
 * of matmul.ts unchanged.
 */
import type { Engine } from "../../tensor/engine.ts";
import { configName, type MatmulConfig, validateConfig } from "./codegen.ts";
import { CONFIG_F16_LARGE, f16Configs } from "./f16.ts";

/** The problem a config is chosen for. */
export interface GemmShape {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  batch: number;
  /** f16 inputs (a separate tuning key and candidate space) */
  f16?: boolean;
}

// ------------------------------------------------------------------ configs

/**
 * Large tiles: 128×128 outputs, 8×8 per thread (256 threads, warps of 8×4
 * lanes covering 64×32 outputs), K tiles of 8, double-buffered: the shape of
 * CUTLASS's SIMT SGEMM. 16.5 KiB of workgroup memory; each thread moves one
 * vec4 of A and one of B per tile.
 */
export const CONFIG_LARGE: MatmulConfig = {
  bm: 128,
  bn: 128,
  bk: 8,
  tm: 8,
  tn: 8,
  stages: 2,
  warp: true,
  splitK: 0,
};
/**
 * Medium tiles for problems with few 128² tiles: 64×64, 8×8 per thread (two
 * warps), so the inner loop keeps LARGE's 1 shared read per 16 FMAs and many
 * small workgroups share an SM.
 */
export const CONFIG_MEDIUM: MatmulConfig = {
  bm: 64,
  bn: 64,
  bk: 16,
  tm: 8,
  tn: 8,
  stages: 2,
  warp: true,
  splitK: 0,
};
/** M < 64: thin tiles along M. */
export const CONFIG_SMALL_M: MatmulConfig = {
  bm: 16,
  bn: 64,
  bk: 16,
  tm: 4,
  tn: 4,
  stages: 2,
  warp: false,
  splitK: 0,
};
/** N < 64: thin tiles along N. */
export const CONFIG_SMALL_N: MatmulConfig = {
  bm: 64,
  bn: 16,
  bk: 16,
  tm: 4,
  tn: 4,
  stages: 2,
  warp: false,
  splitK: 0,
};
/** M and N < 64. */
export const CONFIG_TINY: MatmulConfig = {
  bm: 16,
  bn: 16,
  bk: 16,
  tm: 4,
  tn: 4,
  stages: 1,
  warp: false,
  splitK: 1,
};
/**
 * CPU adapters (llvmpipe): 64×64 tiles, 8×8 per thread, single-buffered —
 * the fastest of the curated candidates on lavapipe for the tiny model's
 * LM-head GEMMs (4–9 GFLOP/s there, about 2× the 32×32 tile). K tiles of 8:
 * llvmpipe compiles the fully unrolled inner product when the kernel is first
 * dispatched, and bk 16 (256 unrolled vec4 FMAs) took 21 s on Mesa's GL path
 * and 1.5 s on lavapipe against 4.7 s and 0.8 s for bk 8, which runs the
 * tiny model's GEMMs as fast (dev/gemm_cpu_tiles.ts, dev/compile_wgsl.ts).
 */
export const CONFIG_CPU: MatmulConfig = {
  bm: 64,
  bn: 64,
  bk: 8,
  tm: 8,
  tn: 8,
  stages: 1,
  warp: false,
  splitK: 1,
};

const tuned = new Map<string, MatmulConfig>();

/** The tuning-table key of a problem: transposes, sizes and batch, e.g. `NT:16384x4096x1024:b1`. */
export function matmulKey(s: GemmShape): string {
  return `${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}:${s.m}x${s.n}x${s.k}:b${s.batch}` +
    (s.f16 ? ":f16" : "");
}

/** Forces `cfg` for every problem with this key (null removes the entry). */
export function setMatmulConfig(key: string, cfg: MatmulConfig | null): void {
  if (cfg) {
    validateConfig(cfg);
    tuned.set(key, { ...cfg });
  } else tuned.delete(key);
}

/** The tuning table (for persisting), and loading it back. */
export function matmulTuning(): Record<string, MatmulConfig> {
  return Object.fromEntries([...tuned].map(([k, v]) => [k, { ...v }]));
}
export function loadMatmulTuning(table: Record<string, MatmulConfig>, replace = false): void {
  if (replace) tuned.clear();
  for (const [k, v] of Object.entries(table)) setMatmulConfig(k, v);
}

export function adapterLimits(e: Engine) {
  return {
    threads: e.limits.maxComputeInvocationsPerWorkgroup ?? 256,
    shared: e.limits.maxComputeWorkgroupStorageSize ?? 16384,
  };
}

/**
 * Candidate configs for an autotuner on this adapter, all valid for its
 * limits (with the worst-case padding). The default list is curated (about
 * 20: the tile shapes, depths and buffering schemes likely to win); `full`
 * gives the whole grid (about 100 on a GPU). With a shape, split-K variants
 * are added when the problem has few output tiles.
 */
export function matmulConfigs(
  e: Engine,
  shape?: GemmShape,
  opts: { full?: boolean } = {},
): MatmulConfig[] {
  const lim = adapterLimits(e);
  const out: MatmulConfig[] = [];
  const seen = new Set<string>();
  const add = (c: MatmulConfig) => {
    try {
      // worst-case padding of either layout
      validateConfig(c, lim, { transA: false, transB: true, f16: !!shape?.f16 });
    } catch {
      return;
    }
    if ((c.bm / c.tm) * (c.bn / c.tn) < 32) return;
    const name = configName(c);
    if (!seen.has(name)) {
      seen.add(name);
      out.push(c);
    }
  };
  const cfg = (
    [bm, bn, bk, tm, tn]: number[],
    stages: 1 | 2 = 2,
    warp = true,
  ): MatmulConfig => ({ bm, bn, bk, tm, tn, stages, warp, splitK: 1 });
  if (shape?.f16) {
    for (const c of f16Configs(e.info.isFallback, !!opts.full)) add(c);
  } else if (e.info.isFallback) {
    for (
      const t of [[32, 32, 8, 4, 4], [64, 64, 16, 8, 8], [32, 64, 8, 4, 8], [64, 64, 16, 4, 4]]
    ) {
      for (const stages of [2, 1] as const) add(cfg(t, stages, false));
    }
  } else if (!opts.full) {
    // [bm, bn, bk, tm, tn], stages, warp layout
    const list: [number[], 1 | 2, boolean][] = [
      [[128, 128, 8, 8, 8], 2, true],
      [[128, 128, 16, 8, 8], 2, true],
      [[128, 128, 8, 8, 8], 2, false],
      [[128, 128, 16, 8, 8], 1, true],
      [[128, 128, 32, 8, 8], 1, true],
      [[128, 128, 32, 8, 8], 1, false],
      [[128, 64, 8, 8, 8], 2, true],
      [[128, 64, 16, 8, 8], 2, true],
      [[64, 128, 8, 8, 8], 2, true],
      [[64, 128, 16, 8, 8], 2, true],
      [[256, 128, 8, 16, 8], 2, true],
      [[128, 256, 8, 8, 16], 2, true],
      [[256, 128, 16, 16, 8], 1, true],
      [[128, 256, 16, 8, 16], 1, true],
      [[128, 128, 8, 8, 4], 2, true],
      [[128, 128, 8, 4, 8], 2, true],
      [[64, 64, 8, 8, 8], 2, true],
      [[64, 64, 16, 8, 8], 2, true],
      [[64, 64, 16, 4, 4], 2, true],
      [[64, 64, 32, 8, 8], 1, true],
    ];
    for (const [t, stages, warp] of list) add(cfg(t, stages, warp));
  } else {
    const tiles = [
      [128, 128, 8, 8],
      [128, 64, 8, 8],
      [64, 128, 8, 8],
      [128, 128, 8, 4],
      [128, 128, 4, 8],
      [64, 64, 4, 4],
      [64, 64, 8, 8],
      [128, 64, 8, 4],
      [64, 128, 4, 8],
      [256, 128, 16, 8],
      [128, 256, 8, 16],
      [256, 128, 8, 8],
      [128, 256, 8, 8],
      [256, 64, 8, 8],
    ];
    for (const [bm, bn, tm, tn] of tiles) {
      for (const bk of [8, 16, 32]) {
        for (const stages of [2, 1] as const) {
          for (const warp of [true, false]) add(cfg([bm, bn, bk, tm, tn], stages, warp));
        }
      }
    }
  }
  if (shape && shape.batch === 1) {
    for (const c of [...out]) {
      const t = Math.ceil(shape.m / c.bm) * Math.ceil(shape.n / c.bn);
      if (t >= 256) continue;
      for (const s of [2, 4, 8, 16]) {
        if (shape.k / s >= 2 * c.bk && t * s <= 1024) add({ ...c, splitK: s });
      }
    }
  }
  return out;
}

/** The config a call will use (the tuning table, else the heuristic). */
export function selectMatmulConfig(e: Engine, s: GemmShape): MatmulConfig {
  const t = tuned.get(matmulKey(s));
  if (t) return t;
  if (e.info.isFallback) return CONFIG_CPU;
  if (s.f16 && s.m >= 64 && s.n >= 64) return CONFIG_F16_LARGE;
  if (s.m < 64 && s.n < 64) return CONFIG_TINY;
  if (s.m < 64) return CONFIG_SMALL_M;
  if (s.n < 64) return CONFIG_SMALL_N;
  const big = Math.ceil(s.m / 128) * Math.ceil(s.n / 128) * s.batch;
  // few large tiles: split K when it is long, else smaller tiles
  if (big >= 100 || (s.batch === 1 && s.k >= 2048)) return CONFIG_LARGE;
  return CONFIG_MEDIUM;
}

/** Split-K slices for a config (deterministic in the shape). */
export function chooseSplit(e: Engine, c: MatmulConfig, s: GemmShape): number {
  if (s.batch !== 1 || c.splitK === 1) return 1;
  let n = c.splitK;
  if (n === 0) {
    if (e.info.isFallback) return 1;
    const tiles = Math.ceil(s.m / c.bm) * Math.ceil(s.n / c.bn);
    if (tiles >= 160) return 1;
    n = Math.min(16, Math.floor(s.k / 512), Math.ceil(256 / tiles));
  }
  // the partial slabs must fit one binding
  const cap = Math.floor(e.maxBinding / Math.max(1, s.m * s.n * 4));
  return Math.max(1, Math.min(n, cap, Math.ceil(s.k / c.bk)));
}
