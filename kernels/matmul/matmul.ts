/**
 * GEMM and the ops built on it: `gemm` (raw, non-recording: out = alpha·op(A)·op(B)
 * + beta·out + bias, batched with element strides), `matmul` (differentiable,
 * rank 2 or 3) and `linear` (differentiable, y = x·Wᵀ + b, PyTorch layout; its
 * backward adds the weight and bias gradients straight into the parameters'
 * gradient buffers when it may).
 *
 * The WGSL comes from codegen.ts. Which tile config runs is decided per
 * call: an entry set with `setMatmulConfig(matmulKey(...), cfg)` (an
 * autotuner fills these and persists them per adapter), else a heuristic on
 * the shape and the adapter (a cheap config on CPU adapters, whose shader
 * compiler is slow on large unrolled kernels). Small K-heavy problems use
 * split-K: slices write their own [M, N] slab, a second pass sums them in a
 * fixed order (no atomics, deterministic).
 */
import { defineKernel, type Engine, type Kernel } from "../../tensor/engine.ts";
import { shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { ACCUMULATED, type GradOut, record } from "../../tensor/tape.ts";
import { sumRowsInto } from "../reduce.ts";
import { grid1d, MAX_GRID } from "../wgsl.ts";
import {
  configName,
  configSharedBytes,
  GEMM_PARAMS,
  genGemm,
  genSplitReduce,
  type MatmulConfig,
  type MatmulVariant,
  validateConfig,
  variantName,
} from "./codegen.ts";

export type { MatmulConfig, MatmulVariant } from "./codegen.ts";
export { configName } from "./codegen.ts";

export interface GemmOptions {
  transA?: boolean;
  transB?: boolean;
  /** default 1 */
  alpha?: number;
  /** default 0 (then `out` is not read: garbage or NaN there is ignored) */
  beta?: number;
  /** [N], added to every row */
  bias?: Tensor;
  /** number of products; default: inferred from the leading dims (1 when m, n, k are given) */
  batch?: number;
  /** batch strides in elements (0 = one operand shared by every batch entry) */
  strideA?: number;
  strideB?: number;
  strideOut?: number;
  /** explicit sizes (else: the last two dims of a and b, with the trans flags) */
  m?: number;
  n?: number;
  k?: number;
  /** element offsets into a, b, out */
  offsetA?: number;
  offsetB?: number;
  offsetOut?: number;
  /** force a tile config for this call (tests, autotuning) */
  config?: MatmulConfig;
}

/** The problem a config is chosen for. */
export interface GemmShape {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  batch: number;
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
  return `${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}:${s.m}x${s.n}x${s.k}:b${s.batch}`;
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

function adapterLimits(e: Engine) {
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
      validateConfig(c, lim);
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
  if (e.info.isFallback) {
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
  if (s.m < 64 && s.n < 64) return CONFIG_TINY;
  if (s.m < 64) return CONFIG_SMALL_M;
  if (s.n < 64) return CONFIG_SMALL_N;
  const big = Math.ceil(s.m / 128) * Math.ceil(s.n / 128) * s.batch;
  // few large tiles: split K when it is long, else smaller tiles
  if (big >= 100 || (s.batch === 1 && s.k >= 2048)) return CONFIG_LARGE;
  return CONFIG_MEDIUM;
}

/** Split-K slices for a config (deterministic in the shape). */
function chooseSplit(e: Engine, c: MatmulConfig, s: GemmShape): number {
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

// ------------------------------------------------------------------ kernels

const cache = new Map<string, Kernel>();

function gemmKernel(c: MatmulConfig, v: MatmulVariant): Kernel {
  const key = `${configName({ ...c, splitK: 1 })}|${variantName(v)}`;
  let k = cache.get(key);
  if (!k) {
    const ty = (w: number) => (w === 4 ? "array<vec4<f32>>" : "array<f32>");
    const bindings: Record<string, { access: "read" | "rw"; type: string }> = {
      A: { access: "read", type: ty(v.vecA) },
      B: { access: "read", type: ty(v.vecB) },
    };
    if (v.bias) bindings.bias = { access: "read", type: ty(v.vecC) };
    bindings.C = { access: "rw", type: ty(v.vecC) };
    k = defineKernel({
      name: `gemm_${configName({ ...c, splitK: 1 })}_${variantName(v)}`,
      params: GEMM_PARAMS,
      bindings,
      code: genGemm(c, v),
    });
    cache.set(key, k);
  }
  return k;
}

const SPLIT_WG = 256;

function splitReduceKernel(vec: 1 | 4, beta: boolean, bias: boolean): Kernel {
  const key = `splitk_${vec}_${beta}_${bias}`;
  let k = cache.get(key);
  if (!k) {
    const ty = vec === 4 ? "array<vec4<f32>>" : "array<f32>";
    const bindings: Record<string, { access: "read" | "rw"; type: string }> = {
      ws: { access: "read", type: ty },
    };
    if (bias) bindings.bias = { access: "read", type: ty };
    bindings.C = { access: "rw", type: ty };
    k = defineKernel({
      name: `gemm_splitk_reduce_v${vec}${beta ? "_beta" : ""}${bias ? "_bias" : ""}`,
      params: { total: "u32", nSplit: "u32", nv: "u32", offC: "u32", alpha: "f32", beta: "f32" },
      bindings,
      code: genSplitReduce(vec, beta, bias, SPLIT_WG),
    });
    cache.set(key, k);
  }
  return k;
}

// ------------------------------------------------------------------ gemm

/** [rows, cols] of the last two dims (a vector is one row) and the product of the others. */
function dims2(t: Tensor): [number, number, number] {
  const s = t.shape;
  if (s.length === 0) return [1, 1, 1];
  if (s.length === 1) return [1, s[0], 1];
  const rows = s[s.length - 2], cols = s[s.length - 1];
  let lead = 1;
  for (let i = 0; i < s.length - 2; i++) lead *= s[i];
  return [rows, cols, lead];
}

function fmtOpts(o: GemmOptions): string {
  return `transA=${!!o.transA} transB=${!!o.transB}`;
}

/**
 * out = alpha·op(A)·op(B) + beta·out + bias for each batch entry (raw, not
 * recorded). A is [M,K] ([K,M] with transA), B is [K,N] ([N,K] with transB),
 * row-major; batch strides in elements (0 = shared operand).
 */
export function gemm(out: Tensor, a: Tensor, b: Tensor, opts: GemmOptions = {}): void {
  const e = out.engine;
  const tA = !!opts.transA, tB = !!opts.transB;
  const [ar, ac, aLead] = dims2(a);
  const [br, bc, bLead] = dims2(b);
  const [, , cLead] = dims2(out);
  const explicit = opts.m !== undefined && opts.n !== undefined && opts.k !== undefined;
  const M = opts.m ?? (tA ? ac : ar);
  const K = opts.k ?? (tA ? ar : ac);
  const N = opts.n ?? (tB ? br : bc);
  if (!explicit) {
    const kb = tB ? bc : br;
    if (kb !== K) {
      throw new Error(
        `gemm: inner sizes differ: a ${shapeStr(a.shape)} b ${shapeStr(b.shape)} (${
          fmtOpts(opts)
        })`,
      );
    }
  }
  const batch = opts.batch ?? (explicit ? 1 : Math.max(aLead, bLead, cLead));
  const sA = opts.strideA ?? (!explicit && aLead > 1 ? M * K : 0);
  const sB = opts.strideB ?? (!explicit && bLead > 1 ? K * N : 0);
  const sC = opts.strideOut ?? M * N;
  const offA = opts.offsetA ?? 0, offB = opts.offsetB ?? 0, offC = opts.offsetOut ?? 0;
  const alpha = opts.alpha ?? 1, beta = opts.beta ?? 0;
  for (const [n, v] of Object.entries({ M, N, K, batch, sA, sB, sC, offA, offB, offC })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`gemm: ${n} = ${v} is not a size`);
  }
  if (M === 0 || N === 0 || batch === 0) return;
  const need = (what: string, t: Tensor, off: number, stride: number, size: number) => {
    const end = off + (batch - 1) * stride + size;
    if (size > 0 && end > t.size) {
      throw new Error(
        `gemm: ${what} ${shapeStr(t.shape)} holds ${t.size} elements, the problem ` +
          `M=${M} N=${N} K=${K} batch=${batch} (${fmtOpts(opts)}) reads ${end}`,
      );
    }
  };
  need("a", a, offA, sA, M * K);
  need("b", b, offB, sB, K * N);
  need("out", out, offC, sC, M * N);
  if (batch > 1 && sC < M * N) throw new Error(`gemm: strideOut ${sC} < M·N = ${M * N}`);
  if (opts.bias && opts.bias.size < N) {
    throw new Error(`gemm: bias ${shapeStr(opts.bias.shape)} has fewer than N = ${N} elements`);
  }
  for (const t of [a, b, out, opts.bias]) {
    if (t && t.dtype !== "f32") throw new Error(`gemm: ${t} is not f32`);
  }

  const shape: GemmShape = { m: M, n: N, k: K, transA: tA, transB: tB, batch };
  const cfg = opts.config ?? selectMatmulConfig(e, shape);
  validateConfig(cfg, adapterLimits(e), { transA: tA, transB: tB });
  const split = chooseSplit(e, cfg, shape);

  const lda = tA ? M : K, ldb = tB ? K : N;
  const v4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const vecA: 1 | 4 = K > 0 && v4(lda, sA, offA) ? 4 : 1;
  const vecB: 1 | 4 = K > 0 && v4(ldb, sB, offB) ? 4 : 1;
  const vecC: 1 | 4 = v4(N, sC, offC) ? 4 : 1;
  const bm = cfg.bm, bn = cfg.bn;
  const gx = Math.ceil(N / bn), gy = Math.ceil(M / bm);
  if (gx > MAX_GRID || gy > MAX_GRID || batch * split > MAX_GRID) {
    throw new Error(`gemm: grid [${gx},${gy},${batch * split}] over ${MAX_GRID} (M=${M} N=${N})`);
  }
  const kSplit = split > 1 ? Math.ceil(Math.ceil(K / split) / cfg.bk) * cfg.bk : Math.max(K, 1);
  const nSplit = split > 1 ? Math.ceil(K / kSplit) : 1;
  const base = {
    M,
    N,
    K,
    lda,
    ldb,
    ldc: N,
    sA: sA / vecA,
    sB: sB / vecB,
    offA: offA / vecA,
    offB: offB / vecB,
    kSplit,
    nSplit,
  };

  if (nSplit === 1) {
    const k = gemmKernel(cfg, {
      transA: tA,
      transB: tB,
      vecA,
      vecB,
      vecC,
      beta: beta !== 0,
      bias: !!opts.bias,
    });
    const binds: Record<string, Tensor> = { A: a, B: b, C: out };
    if (opts.bias) binds.bias = opts.bias;
    e.run(k, binds, { ...base, sC: sC / vecC, offC: offC / vecC, alpha, beta }, [gx, gy, batch]);
    return;
  }

  // split-K: slice s writes ws[s] (raw sums), then ws is summed in slice order
  const ws = e.empty([nSplit, M, N], "f32", `split-K partials [${nSplit},${M},${N}]`);
  const vecW: 1 | 4 = N % 4 === 0 ? 4 : 1;
  const k1 = gemmKernel(cfg, {
    transA: tA,
    transB: tB,
    vecA,
    vecB,
    vecC: vecW,
    beta: false,
    bias: false,
  });
  e.run(k1, { A: a, B: b, C: ws }, { ...base, sC: (M * N) / vecW, offC: 0, alpha: 1, beta: 0 }, [
    gx,
    gy,
    nSplit,
  ]);
  const vecR: 1 | 4 = vecW === 4 && offC % 4 === 0 ? 4 : 1;
  const k2 = splitReduceKernel(vecR, beta !== 0, !!opts.bias);
  const binds: Record<string, Tensor> = { ws, C: out };
  if (opts.bias) binds.bias = opts.bias;
  const total = (M * N) / vecR;
  e.run(
    k2,
    binds,
    { total, nSplit, nv: N / vecR, offC: offC / vecR, alpha, beta },
    grid1d(total, SPLIT_WG),
  );
  ws.dispose();
}

/** Workgroup memory of the config a problem would use (for reports). */
export function gemmSharedBytes(e: Engine, s: GemmShape): number {
  return configSharedBytes(selectMatmulConfig(e, s), s);
}

// ------------------------------------------------------------------ matmul

/**
 * op(a)·op(b), differentiable. a: [M,K] or [batch,M,K] ([K,M] / [batch,K,M]
 * with transA); b: [K,N] or [batch,K,N] ([N,K] ... with transB); a rank-2
 * operand is shared across the batch. Out: [M,N] or [batch,M,N].
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  opts: { transA?: boolean; transB?: boolean } = {},
): Tensor {
  const tA = !!opts.transA, tB = !!opts.transB;
  if ((a.rank !== 2 && a.rank !== 3) || (b.rank !== 2 && b.rank !== 3)) {
    throw new Error(
      `matmul: ranks must be 2 or 3 (a ${shapeStr(a.shape)}, b ${shapeStr(b.shape)})`,
    );
  }
  const a3 = a.rank === 3, b3 = b.rank === 3;
  const batch = a3 ? a.shape[0] : b3 ? b.shape[0] : 1;
  if (a3 && b3 && a.shape[0] !== b.shape[0]) {
    throw new Error(`matmul: batch sizes differ (${shapeStr(a.shape)} vs ${shapeStr(b.shape)})`);
  }
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const M = tA ? ac : ar, K = tA ? ar : ac, N = tB ? br : bc;
  if ((tB ? bc : br) !== K) {
    throw new Error(
      `matmul: inner sizes differ: a ${shapeStr(a.shape)} b ${shapeStr(b.shape)} ` +
        `(transA=${tA} transB=${tB})`,
    );
  }
  const e = a.engine;
  const batched = a3 || b3;
  const out = e.empty(batched ? [batch, M, N] : [M, N]);
  const sA = a3 ? M * K : 0, sB = b3 ? K * N : 0;
  gemm(out, a, b, {
    transA: tA,
    transB: tB,
    m: M,
    n: N,
    k: K,
    batch,
    strideA: sA,
    strideB: sB,
    strideOut: M * N,
  });
  const needA = a.requiresGrad, needB = b.requiresGrad;
  const aShape = [...a.shape], bShape = [...b.shape];
  // dA needs b and dB needs a: keep only what will be used alive until backward
  const save = [...(needB ? [a] : []), ...(needA ? [b] : [])];
  record("matmul", [a, b], [out], save, ([g], saved, acc) => {
    const as = needB ? saved[0] : null!, bs = needA ? saved[needB ? 1 : 0] : null!;
    if (!g) return [null, null];
    const res: GradOut[] = [null, null];
    const sG = M * N;
    if (needA) {
      // dA: !tA: g·op(B)ᵀ [M,K]; tA: op(B)·gᵀ [K,M]
      const into = acc[0];
      const ga = into ?? e.empty(aShape);
      const beta0 = into ? 1 : 0;
      const one = (beta: number, i: number | null) => {
        const gOff = i === null ? 0 : i * sG, bOff = i === null ? 0 : i * sB;
        const nb = i === null ? batch : 1;
        const strides = i === null ? { batch: nb, strideOut: sA } : { batch: 1, strideOut: 0 };
        if (!tA) {
          gemm(ga, g, bs, {
            transB: !tB,
            m: M,
            n: K,
            k: N,
            ...strides,
            strideA: i === null ? sG : 0,
            strideB: i === null ? sB : 0,
            offsetA: gOff,
            offsetB: bOff,
            beta,
          });
        } else {
          gemm(ga, bs, g, {
            transA: tB,
            transB: true,
            m: K,
            n: M,
            k: N,
            ...strides,
            strideA: i === null ? sB : 0,
            strideB: i === null ? sG : 0,
            offsetA: bOff,
            offsetB: gOff,
            beta,
          });
        }
      };
      if (a3 || !batched) one(beta0, null);
      else for (let i = 0; i < batch; i++) one(i === 0 ? beta0 : 1, i); // shared A: Σ over batch, in order
      res[0] = into ? ACCUMULATED : ga;
    }
    if (needB) {
      // dB: !tB: op(A)ᵀ·g [K,N]; tB: gᵀ·op(A) [N,K]
      const into = acc[1];
      const gb = into ?? e.empty(bShape);
      const beta0 = into ? 1 : 0;
      const one = (beta: number, i: number | null, rowsM: number) => {
        const gOff = i === null ? 0 : i * sG, aOff = i === null ? 0 : i * sA;
        const nb = i === null && b3 ? batch : 1;
        const common = { batch: nb, strideOut: nb > 1 ? sB : 0, beta };
        if (!tB) {
          gemm(gb, as, g, {
            transA: !tA,
            m: K,
            n: N,
            k: rowsM,
            ...common,
            strideA: nb > 1 ? sA : 0,
            strideB: nb > 1 ? sG : 0,
            offsetA: aOff,
            offsetB: gOff,
          });
        } else {
          gemm(gb, g, as, {
            transA: true,
            transB: tA,
            m: N,
            n: K,
            k: rowsM,
            ...common,
            strideA: nb > 1 ? sG : 0,
            strideB: nb > 1 ? sA : 0,
            offsetA: gOff,
            offsetB: aOff,
          });
        }
      };
      if (b3 || !batched) one(beta0, null, M);
      else if (!tA) one(beta0, null, batch * M); // shared B: [batch·M, K] is one long K
      else for (let i = 0; i < batch; i++) one(i === 0 ? beta0 : 1, i, M);
      res[1] = into ? ACCUMULATED : gb;
    }
    return res;
  });
  return out;
}

// ------------------------------------------------------------------ linear

/**
 * y = x·Wᵀ + b (PyTorch nn.Linear). x: [..., in], w: [out, in], bias: [out].
 * Backward: gx = gy·W, gW = gyᵀ·x, gb = Σ_rows gy; gW and gb go straight
 * into the parameters' gradient buffers when they are leaves.
 */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (w.rank !== 2) throw new Error(`linear: weight ${shapeStr(w.shape)} is not [out, in]`);
  const [outF, inF] = w.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF) {
    throw new Error(
      `linear: x ${shapeStr(x.shape)} does not end in ${inF} (weight ${shapeStr(w.shape)})`,
    );
  }
  if (bias && bias.size !== outF) {
    throw new Error(`linear: bias ${shapeStr(bias.shape)} for ${outF} outputs`);
  }
  const e = x.engine;
  const T = x.size / inF;
  const xShape = [...x.shape];
  const y = e.empty([...xShape.slice(0, -1), outF]);
  gemm(y, x, w, { transB: true, bias, m: T, n: outF, k: inF });
  const needX = x.requiresGrad, needW = w.requiresGrad, needB = !!bias?.requiresGrad;
  const inputs = bias ? [x, w, bias] : [x, w];
  // dx needs W and dW needs x: keep only what will be used alive until backward
  const save = [...(needW ? [x] : []), ...(needX ? [w] : [])];
  record("linear", inputs, [y], save, ([g], saved, acc) => {
    const xs = needW ? saved[0] : null!, ws = needX ? saved[needW ? 1 : 0] : null!;
    if (!g) return inputs.map(() => null);
    const res: GradOut[] = inputs.map(() => null);
    if (needX) {
      const into = acc[0];
      const gx = into ?? e.empty(xShape);
      gemm(gx, g, ws, { m: T, n: inF, k: outF, beta: into ? 1 : 0 });
      res[0] = into ? ACCUMULATED : gx;
    }
    if (needW) {
      const into = acc[1];
      const gw = into ?? e.empty([outF, inF]);
      gemm(gw, g, xs, { transA: true, m: outF, n: inF, k: T, beta: into ? 1 : 0 });
      res[1] = into ? ACCUMULATED : gw;
    }
    if (needB) {
      const into = acc[2];
      const gb = into ?? e.empty([outF]);
      sumRowsInto(gb, g, !!into);
      res[2] = into ? ACCUMULATED : gb;
    }
    return res;
  });
  return y;
}
