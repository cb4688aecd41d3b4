/**
 * GEMM throughput: 4096³ in all four transpose variants and the model's
 * shapes (16,384 tokens per micro-batch: the projections forward, their input
 * and weight gradients, and the LM head in row chunks). Inputs are fresh
 * per size, filled on the GPU from a counter-based hash that the host can
 * evaluate too, so each size is spot-checked against a float64 dot product
 * before it is timed. Times are GPU timestamps around many recorded
 * dispatches; the median of the repeats is reported.
 */
import type { Engine } from "../tensor/engine.ts";
import {
  configName,
  F16_FLUSH,
  gemm,
  type GemmShape,
  type MatmulConfig,
  selectMatmulConfig,
} from "../kernels/matmul/mod.ts";
import { median } from "./report.ts";
import { randomTensor, valueJs } from "./random.ts";

export interface MatmulBenchRow {
  name: string;
  m: number;
  n: number;
  k: number;
  ms: number;
  tflops: number;
  /** the tile config that ran */
  config: string;
  /** "f32", or "f16" (f16 inputs, f32 output) */
  precision: "f32" | "f16";
}

/** [m, n, k, transA, transB] (transposes as 0/1, default 0). */
export type BenchSize = number[];

const TOKENS = 16384;
/** [out, in] of every nn.Linear of the model. */
const LINEARS: [string, number, number][] = [
  ["fc1/in_proj", 4096, 1024],
  ["fc2/out_proj(conv)", 1024, 2048],
  ["proj_q/proj_k", 256, 1024],
  ["Wqkv", 3072, 1024],
  ["proj_v/out_proj", 1024, 1024],
];
const VOCAB = 50264, D = 1024;

/** LM-head rows per chunk: as model/lm_head.ts chunks them (logits under half the max binding). */
function headRows(maxBinding: number): number {
  return Math.max(64, Math.min(Math.floor(maxBinding / 2 / (VOCAB * 4) / 64) * 64, 8192));
}

/** The default list: 4096³ × 4 transposes, then the model's GEMMs (named). */
export function defaultMatmulSizes(maxBinding = 2 ** 31): { name: string; size: BenchSize }[] {
  const R = headRows(maxBinding);
  const out: { name: string; size: BenchSize }[] = [];
  for (const [tA, tB] of [[0, 0], [0, 1], [1, 0], [1, 1]]) {
    out.push({
      name: `4096³ ${tA ? "T" : "N"}${tB ? "T" : "N"}`,
      size: [4096, 4096, 4096, tA, tB],
    });
  }
  for (const [name, o, i] of LINEARS) {
    out.push({ name: `${name} fwd x·Wᵀ`, size: [TOKENS, o, i, 0, 1] });
    out.push({ name: `${name} dx gy·W`, size: [TOKENS, i, o, 0, 0] });
    out.push({ name: `${name} dW gyᵀ·x`, size: [o, i, TOKENS, 1, 0] });
  }
  out.push({ name: "lm_head fwd y·Eᵀ", size: [R, VOCAB, D, 0, 1] });
  out.push({ name: "lm_head dy g·E", size: [R, D, VOCAB, 0, 0] });
  out.push({ name: "lm_head dE gᵀ·y", size: [VOCAB, D, R, 1, 0] });
  return out;
}

// ------------------------------------------------------------------ inputs

// ------------------------------------------------------------------ timing

let seedCounter = 1;

/**
 * Times one GEMM shape (optionally under a forced config): fresh inputs, a
 * spot check of `checks` outputs against float64, a warm-up, then `repeats`
 * timed batches of back-to-back calls. Returns ms per call.
 */
export async function timeGemm(
  e: Engine,
  s: GemmShape,
  opts: { config?: MatmulConfig; repeats?: number; checks?: number; targetMs?: number } = {},
): Promise<{ ms: number; tflops: number; config: string }> {
  const { m, n, k, transA, transB } = s;
  const seedA = seedCounter++, seedB = seedCounter++;
  const dt = s.f16 ? "f16" : "f32";
  const a = randomTensor(e, [m * k], seedA, 1, dt);
  const b = randomTensor(e, [k * n], seedB, 1, dt);
  const val = s.f16 ? (seed: number, i: number) => Math.f16round(valueJs(seed, i)) : valueJs;
  const c = e.empty([m, n]);
  const cfg = opts.config ?? selectMatmulConfig(e, s);
  const call = () => gemm(c, a, b, { m, n, k, transA, transB, config: cfg });
  try {
    call();
    // spot check: outputs at random (i, j) against float64
    const got = await e.read(c);
    const checks = opts.checks ?? 48;
    for (let t = 0; t < checks; t++) {
      const i = Math.floor(Math.random() * m), j = Math.floor(Math.random() * n);
      let want = 0, absSum = 0;
      for (let p = 0; p < k; p++) {
        const av = val(seedA, transA ? p * m + i : i * k + p);
        const bv = val(seedB, transB ? j * k + p : p * n + j);
        want += av * bv;
        absSum += Math.abs(av * bv);
      }
      // fp32 dot product of k terms: |err| ≤ γ_k·Σ|a||b| (any order, with or without fma);
      // f16 (inputs exact, as rounded): L-product f16 partial sums, summed in f32
      // (tests/kernels/matmul_f16_test.ts derives it), plus f16 subnormal rounding
      const L = Math.min(cfg.flush ?? F16_FLUSH, k);
      const bound = s.f16
        ? (L * 2 ** -11 + (Math.ceil(k / L) + 4 + Math.max(cfg.splitK, 0)) * 2 ** -24) * 1.01 *
            absSum + k * 2 ** -25
        : (k + 4) * 2 ** -24 * 1.001 * absSum;
      const d = Math.abs(got[i * n + j] - want);
      if (!(d <= bound)) {
        throw new Error(
          `matmul bench ${transA ? "T" : "N"}${transB ? "T" : "N"} ${m}x${n}x${k} ` +
            `(${configName(cfg)}): out[${i},${j}] = ${
              got[i * n + j]
            }, expected ${want} (bound ${bound})`,
        );
      }
    }
    // warm-up and calibration: enough calls per timed batch for ~targetMs of GPU time
    const one = await e.measure(call);
    const inner = Math.max(
      1,
      Math.min(100, Math.ceil((opts.targetMs ?? 25) / Math.max(one, 1e-3))),
    );
    // keep the GPU busy for ~100 ms right before timing: an idle GPU runs at
    // low clocks (seen on the H200: the first shapes of a run measured 2-4x
    // slower), so short timed batches after compiles or readbacks mislead
    const warm = Math.min(2000, Math.ceil(100 / Math.max(one, 1e-3)));
    for (let i = 0; i < warm; i++) call();
    const times: number[] = [];
    for (let r = 0; r < (opts.repeats ?? 5); r++) {
      const ms = await e.measure(() => {
        for (let i = 0; i < inner; i++) call();
      });
      times.push(ms / inner);
    }
    const ms = median(times);
    return { ms, tflops: (2 * m * n * k * s.batch) / (ms * 1e-3) / 1e12, config: configName(cfg) };
  } finally {
    a.dispose();
    b.dispose();
    c.dispose();
  }
}

/**
 * Benchmarks GEMM shapes: `sizes` as [m, n, k, transA, transB] (default: 4096³
 * in all transposes and the model's shapes). Sizes too large for the
 * adapter's binding limit are skipped.
 */
export async function benchMatmul(
  e: Engine,
  opts: { sizes?: number[][]; repeats?: number; f16?: boolean } = {},
): Promise<MatmulBenchRow[]> {
  const list = opts.sizes
    ? opts.sizes.map((size) => ({
      name: `gemm ${size[3] ? "T" : "N"}${size[4] ? "T" : "N"} ${size[0]}x${size[1]}x${size[2]}`,
      size,
    }))
    : defaultMatmulSizes(e.maxBinding);
  const rows: MatmulBenchRow[] = [];
  for (const { name, size } of list) {
    const [m, n, k] = size;
    const shape: GemmShape = {
      m,
      n,
      k,
      transA: !!size[3],
      transB: !!size[4],
      batch: 1,
      f16: !!opts.f16,
    };
    if (Math.max(m * k, k * n, m * n) * 4 > e.maxBinding) continue;
    const r = await timeGemm(e, shape, { repeats: opts.repeats });
    const precision = opts.f16 ? "f16" : "f32";
    rows.push({ name, m, n, k, ms: r.ms, tflops: r.tflops, config: r.config, precision });
  }
  return rows;
}

/**
 * Times candidate configs on one shape and returns them fastest first (for
 * an autotuner: pass `matmulConfigs(e, shape)`, then `setMatmulConfig`).
 */
export async function tuneMatmul(
  e: Engine,
  shape: GemmShape,
  candidates: MatmulConfig[],
  opts: { repeats?: number } = {},
): Promise<{ config: MatmulConfig; ms: number; tflops: number }[]> {
  const out: { config: MatmulConfig; ms: number; tflops: number }[] = [];
  for (const config of candidates) {
    try {
      const r = await timeGemm(e, shape, {
        config,
        repeats: opts.repeats ?? 3,
        checks: 8,
        targetMs: 10,
      });
      out.push({ config, ms: r.ms, tflops: r.tflops });
    } catch (err) {
      // a candidate that fails to compile or to check is not a candidate (logged, skipped)
      console.log(`tune: ${configName(config)} skipped: ${(err as Error).message.slice(0, 200)}`);
    }
  }
  return out.sort((x, y) => x.ms - y.ms);
}
