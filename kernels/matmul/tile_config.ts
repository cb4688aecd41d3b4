/**
 * The tile configurations of the tiled GEMM and what is derived from them:
 * MatmulConfig / MatmulVariant, their names, thread and workgroup-memory
 * counts, validation, the f16 flush lengths and the uniform parameters every
 * GEMM kernel takes. The WGSL generator is codegen.ts. Moved out of
 * codegen.ts unchanged.
 */

/** A tile configuration: what an autotuner picks per adapter and shape. */
export interface MatmulConfig {
  /** output tile rows (M) of a workgroup */
  bm: number;
  /** output tile columns (N) of a workgroup */
  bn: number;
  /** K depth of one workgroup-memory tile */
  bk: number;
  /** outputs per thread along M (multiple of 4) */
  tm: number;
  /** outputs per thread along N (multiple of 4) */
  tn: number;
  /** 2: double-buffered workgroup tiles (one barrier per tile); 1: single buffer (two) */
  stages: 1 | 2;
  /**
   * Lay out the 32 lanes of each warp as 8 (N) × 4 (M) threads, so a warp's
   * fragment reads touch 128 contiguous bytes of B and 64 of A (one
   * shared-memory wavefront each). Needs BN/TN % 8 == 0 and BM/TM % 4 == 0.
   */
  warp: boolean;
  /** split-K slices: 0 = automatic, 1 = none, s > 1 = s slices summed in a fixed order */
  splitK: number;
  /**
   * f16 kernels only: K products summed in f16 before they are added into the
   * f32 accumulators (a divisor or a multiple of bk; default F16_FLUSH)
   */
  flush?: number;
  /** f16 kernels only: partial sums as vec2<f16> pairs (one packed FMA each) instead of vec4 */
  h2?: boolean;
}

/** Default flush length of the f16 kernels (products per f16 partial sum). */
export const F16_FLUSH = 32;
/** Flush lengths the tuner may choose (all measured at or under bf16 input rounding's error). */
export const F16_FLUSHES = [16, 32, 64] as const;

/** What a generated kernel is specialised for besides the tile config. */
export interface MatmulVariant {
  transA: boolean;
  transB: boolean;
  /** global read width of A / B, write width of out (4 = vec4) */
  vecA: 1 | 4;
  vecB: 1 | 4;
  vecC: 1 | 4;
  /** reads `out` (beta ≠ 0) */
  beta: boolean;
  /** has a bias binding */
  bias: boolean;
  /** A and B are f16 (packed f16 FMAs, f16 partial sums flushed into f32); C and bias stay f32 */
  f16?: boolean;
}

export function configName(c: MatmulConfig): string {
  return `${c.bm}x${c.bn}x${c.bk}_t${c.tm}x${c.tn}_s${c.stages}${c.warp ? "w" : ""}` +
    (c.splitK !== 1 ? `_k${c.splitK}` : "") + (c.flush ? `_f${c.flush}` : "") +
    (c.h2 ? "h2" : "");
}

export function variantName(v: MatmulVariant): string {
  return `${v.transA ? "T" : "N"}${v.transB ? "T" : "N"}_v${v.vecA}${v.vecB}${v.vecC}` +
    `${v.beta ? "_beta" : ""}${v.bias ? "_bias" : ""}${v.f16 ? "_f16" : ""}`;
}

/** Threads of a workgroup. */
export function configThreads(c: MatmulConfig): number {
  return (c.bm / c.tm) * (c.bn / c.tn);
}

type Layout = Pick<MatmulVariant, "transA" | "transB"> & { f16?: boolean };

/** Workgroup-memory bytes of a config (with the padding of transposed stores, worst case). */
export function configSharedBytes(c: MatmulConfig, v?: Layout) {
  const padA = v ? (v.transA ? 0 : 1) : 1;
  const padB = v ? (v.transB ? 1 : 0) : 1;
  return c.stages * c.bk * (c.bm / 4 + padA + c.bn / 4 + padB) * (v?.f16 ? 8 : 16);
}

/** Throws when a config cannot be generated; `limits` adds the adapter's limits. */
export function validateConfig(
  c: MatmulConfig,
  limits?: { threads: number; shared: number },
  v?: Layout,
): void {
  const bad = (why: string) => {
    throw new Error(`matmul config ${configName(c)}: ${why}`);
  };
  for (const [k, x] of Object.entries(c)) {
    if (k !== "warp" && k !== "h2" && x !== undefined && (!Number.isInteger(x) || x < 0)) {
      bad(`${k} must be an integer ≥ 0`);
    }
  }
  if (c.flush !== undefined && (c.flush <= 0 || (c.bk % c.flush && c.flush % c.bk))) {
    bad("flush must divide bk or be a multiple of it");
  }
  if (c.tm % 4 || c.tn % 4 || c.tm === 0 || c.tn === 0) bad("tm and tn must be multiples of 4");
  if (c.bm % c.tm || c.bn % c.tn) bad("bm % tm and bn % tn must be 0");
  if (c.bk % 4 || c.bk === 0) bad("bk must be a multiple of 4");
  if (c.stages !== 1 && c.stages !== 2) bad("stages must be 1 or 2");
  const t = configThreads(c);
  if (c.warp && ((c.bn / c.tn) % 8 || (c.bm / c.tm) % 4)) bad("warp layout needs bn/tn%8, bm/tm%4");
  if (limits) {
    if (t > limits.threads) bad(`${t} threads > ${limits.threads}`);
    const s = configSharedBytes(c, v);
    if (s > limits.shared) bad(`${s} bytes of workgroup memory > ${limits.shared}`);
  }
}

/** Uniform parameters of every GEMM kernel, in order. */
export const GEMM_PARAMS = {
  M: "u32",
  N: "u32",
  K: "u32",
  /** leading dimensions (elements) */
  lda: "u32",
  ldb: "u32",
  ldc: "u32",
  /** batch strides and base offsets, in units of the binding's vector width */
  sA: "u32",
  sB: "u32",
  sC: "u32",
  offA: "u32",
  offB: "u32",
  offC: "u32",
  /** K elements per split-K slice (a multiple of BK) and the number of slices */
  kSplit: "u32",
  nSplit: "u32",
  alpha: "f32",
  beta: "f32",
} as const;
