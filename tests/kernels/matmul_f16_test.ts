/**
 * The f16-input GEMM (A and B f16, out and bias f32): packed f16 FMAs into
 * f16 partial sums, flushed into f32 accumulators every `flush` products.
 * Checked against the float64 reference (kernels/matmul/reference.ts) computed on
 * the same f16-rounded inputs, so input rounding is not part of the error
 * (it is the caller's choice of f16 storage); the checked error is the
 * arithmetic's.
 *
 * Tolerance, per element (u_h = 2⁻¹¹ f16 unit roundoff, u = 2⁻²⁴ f32):
 *   - each f16 partial sum of L ≤ flush products is L fmas, each rounded
 *     once in f16: |err| ≤ γ_L(u_h)·Σ_block|a||b| (Higham §3.1), plus at most
 *     2⁻²⁵ absolute per rounding in the f16 subnormal range;
 *   - the K/L partials (exact in f32) are summed in f32: γ_{K/L}(u)·Σ|a||b|;
 *   - alpha·s + beta·c + bias: 4 more f32 roundings; split-K: S more.
 * So |err| ≤ (flush·u_h + (⌈K/flush⌉ + 4 + S)·u)·1.01·(|alpha|Σ|a||b| +
 * |beta·c| + |bias|) + |alpha|·K·2⁻²⁵. This worst case is about flush·u_h
 * (1.6% at flush 32) of Σ|a||b|, loose enough to miss a single dropped term
 * in a long sum, so each case also checks the typical error: rms(err) ≤ 4e-3·
 * rms(ref), twice the error of bf16 input rounding measured by
 * dev/f16_flush_error.ts (2e-3; flush 64 measures 1.2e-3 there). A wrong
 * index or dropped tile is O(1) relative, far above both.
 */
import {
  gemm,
  type GemmOptions,
  type MatmulConfig,
  matmulConfigs,
  matmulKey,
  selectMatmulConfig,
} from "../../kernels/matmul/mod.ts";
import { F16_FLUSH, validateConfig } from "../../kernels/matmul/codegen.ts";
import h200 from "../../kernels/matmul/tuning/nvidia-h200.json" with { type: "json" };
import * as ref from "../../kernels/matmul/reference.ts";
import type { Engine } from "../../tensor/engine.ts";
import { type F64, gpuTest, Rng } from "../helpers.ts";

const UH = 2 ** -11, U = 2 ** -24;

const h = (x: F64) => Float64Array.from(x, Math.f16round);

interface Case {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  bias?: boolean;
  batch?: number;
  batchA?: boolean;
  batchB?: boolean;
  config?: MatmulConfig;
}

async function checkF16(e: Engine, rng: Rng, c: Case, what: string): Promise<void> {
  const batch = c.batch ?? 1;
  const sA = batch > 1 && c.batchA !== false ? c.m * c.k : 0;
  const sB = batch > 1 && c.batchB !== false ? c.k * c.n : 0;
  const sC = c.m * c.n;
  const a = h(rng.randn((sA ? batch : 1) * c.m * c.k));
  const b = h(rng.randn((sB ? batch : 1) * c.k * c.n));
  const bias = c.bias ? rng.randn(c.n) : undefined;
  const c0 = rng.randn(batch * sC);
  const o: ref.GemmRefOptions = {
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA,
    transB: c.transB,
    alpha: c.alpha,
    beta: c.beta,
    bias,
    batch,
    strideA: sA,
    strideB: sB,
    strideOut: sC,
  };
  const ta = e.tensor(a, [a.length], "f16"), tb = e.tensor(b, [b.length], "f16");
  const tc = e.tensor(Float32Array.from(c0), [c0.length]);
  const tbias = bias ? e.tensor(Float32Array.from(bias), [c.n]) : undefined;
  const opts: GemmOptions = { ...o, bias: tbias, config: c.config };
  gemm(tc, ta, tb, opts);
  const got = (await e.read(tc)) as Float32Array;
  const want = ref.gemm(a, b, o, c0);
  // the bound's magnitude: the same product on |a|, |b|, |alpha|, |beta·c|, |bias|
  const abs = (x: ArrayLike<number>) => Float64Array.from(x, Math.abs);
  const mag = ref.gemm(abs(a), abs(b), {
    ...o,
    alpha: Math.abs(o.alpha ?? 1),
    beta: Math.abs(o.beta ?? 0),
    bias: bias ? abs(bias) : undefined,
  }, abs(c0));
  const cfg = c.config ??
    selectMatmulConfig(e, { ...o, transA: !!c.transA, transB: !!c.transB, batch, f16: true });
  const L = Math.min(cfg.flush ?? F16_FLUSH, c.k);
  const S = cfg.splitK > 1 ? cfg.splitK : 0;
  const rel = (L * UH + (Math.ceil(c.k / L) + 4 + S) * U) * 1.01;
  const absTerm = Math.abs(o.alpha ?? 1) * c.k * 2 ** -25;
  let errSq = 0, refSq = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const bound = rel * mag[i] + absTerm;
    if (!(d <= bound)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} ` +
          `(|d| = ${d.toExponential(3)} > bound ${bound.toExponential(3)})`,
      );
    }
    errSq += d * d;
    refSq += want[i] * want[i];
  }
  const rms = Math.sqrt(errSq / refSq);
  if (!(rms <= 4e-3)) throw new Error(`${what}: rms error ${rms.toExponential(3)} > 4e-3 of rms`);
  for (const t of [ta, tb, tc, tbias]) t?.dispose();
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const tname = (tA?: boolean, tB?: boolean) => `${tA ? "T" : "N"}${tB ? "T" : "N"}`;

/** Small configs that cover both flush placements (inside a tile, every n tiles) and both buffering schemes. */
const CONFIGS: MatmulConfig[] = [
  { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4, stages: 2, warp: false, splitK: 1, flush: 8 },
  { bm: 64, bn: 64, bk: 16, tm: 8, tn: 8, stages: 2, warp: true, splitK: 1, flush: 64, h2: true },
  { bm: 32, bn: 64, bk: 16, tm: 4, tn: 8, stages: 1, warp: false, splitK: 1, flush: 32 },
];

gpuTest("matmul f16: all transposes, awkward and vec4 sizes, against float64", async (e) => {
  if (!e.hasF16) return;
  const rng = new Rng(11);
  for (const [tA, tB] of TRANS) {
    for (const [m, n, k] of [[37, 53, 75], [64, 96, 160], [5, 3, 130]]) {
      await checkF16(
        e,
        rng,
        { m, n, k, transA: tA, transB: tB },
        `${tname(tA, tB)} ${m}x${n}x${k}`,
      );
    }
  }
});

gpuTest("matmul f16: flush inside a tile / every n tiles, both bufferings", async (e) => {
  if (!e.hasF16) return;
  const rng = new Rng(12);
  for (const config of CONFIGS) {
    for (const [tA, tB] of [[false, true], [false, false], [true, false]] as const) {
      await checkF16(
        e,
        rng,
        { m: 70, n: 66, k: 200, transA: tA, transB: tB, config },
        `${tname(tA, tB)} flush ${config.flush}`,
      );
    }
  }
});

gpuTest(
  "matmul f16: linear's three GEMMs (bias, beta accumulation), alpha, batch, split-K",
  async (e) => {
    if (!e.hasF16) return;
    const rng = new Rng(13);
    // y = x·Wᵀ + b; dx += gy·W; dW += gyᵀ·x
    await checkF16(e, rng, { m: 48, n: 40, k: 36, transB: true, bias: true }, "linear fwd");
    await checkF16(e, rng, { m: 48, n: 36, k: 40, beta: 1 }, "linear dx, accumulated");
    await checkF16(
      e,
      rng,
      { m: 40, n: 36, k: 48, transA: true, beta: 1 },
      "linear dW, accumulated",
    );
    await checkF16(
      e,
      rng,
      { m: 33, n: 20, k: 41, alpha: -0.5, beta: 0.25, bias: true },
      "alpha beta bias",
    );
    await checkF16(e, rng, { m: 20, n: 24, k: 36, batch: 3 }, "batched");
    await checkF16(
      e,
      rng,
      { m: 20, n: 24, k: 36, batch: 3, batchB: false, transB: true },
      "batched, shared B",
    );
    const split = { ...CONFIGS[0], splitK: 3 };
    await checkF16(
      e,
      rng,
      { m: 40, n: 36, k: 300, transA: true, beta: 1, config: split },
      "split-K 3",
    );
  },
);

gpuTest("matmul f16: tuning keys and candidates are separate from f32", (e) => {
  const s = { m: 64, n: 64, k: 64, transA: false, transB: true, batch: 1 };
  if (matmulKey({ ...s, f16: true }) !== "NT:64x64x64:b1:f16") throw new Error("f16 key");
  if (matmulKey(s) !== "NT:64x64x64:b1") throw new Error("f32 key");
  const c = matmulConfigs(e, { ...s, f16: true });
  if (!c.length || c.some((x) => x.flush === undefined)) {
    throw new Error("f16 candidates need a flush");
  }
});

gpuTest("tensor f16: upload rounds to nearest even, read returns f32 (odd sizes)", async (e) => {
  if (!e.hasF16) return;
  const x = [1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, -(2 ** -24), 0.1, 3];
  const t = e.tensor(x, [x.length], "f16");
  if (t.byteLength !== 14) throw new Error(`f16 byteLength ${t.byteLength}`);
  const got = await e.read(t);
  const want = x.map(Math.f16round);
  if (!(got instanceof Float32Array) || want.some((v, i) => got[i] !== v)) {
    throw new Error(`f16 round trip: ${[...got]} vs ${want}`);
  }
  t.dispose();
});

Deno.test("matmul f16: the shipped H200 table's f16 entries are valid configs for their layout", () => {
  let n = 0;
  for (const [key, cfg] of Object.entries(h200.table as Record<string, MatmulConfig>)) {
    if (!key.endsWith(":f16")) continue;
    n++;
    // the H200's limits (BENCHMARKS.md): 1024 invocations, 48 KiB of workgroup memory
    validateConfig(cfg, { threads: 1024, shared: 48 << 10 }, {
      transA: key[0] === "T",
      transB: key[1] === "T",
      f16: true,
    });
    if (cfg.flush === undefined || cfg.flush > 64) throw new Error(`${key}: flush ${cfg.flush}`);
  }
  if (n === 0) throw new Error("no f16 entries in the H200 table");
});
