import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  CONFIG_CPU,
  CONFIG_LARGE,
  CONFIG_MEDIUM,
  CONFIG_SMALL_M,
  CONFIG_SMALL_N,
  CONFIG_TINY,
  gemm,
  type GemmOptions,
  linear,
  matmul,
  type MatmulConfig,
  matmulConfigs,
  matmulKey,
  selectMatmulConfig,
  setMatmulConfig,
} from "../../kernels/matmul/mod.ts";
import * as ref from "../../kernels/matmul/reference.ts";
import { clone, fill } from "../../kernels/elementwise.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { checkFiniteDiff, dot, type F64, gpuTest, param, readF64, Rng } from "../helpers.ts";

/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * Tolerance of an fp32 GEMM output against the float64 reference, per element.
 * Each output is a K-term dot product accumulated in f32; the classic bound
 * (Higham, Accuracy and Stability §3.1) is |err| ≤ γ_K·Σ|a||b| with
 * γ_K = K·u/(1 − K·u), whatever the summation order or the use of fma.
 * alpha·s, + beta·c and + bias add at most 4 more roundings, and split-K's
 * sum of S partials S more (`extra`). So the bound is
 * (K + 4 + extra)·u·(|alpha|·Σ|a||b| + |beta·c| + |bias|), with the factor
 * 1.001 covering 1/(1 − K·u) for K < 10⁵. Inputs are exactly representable in
 * f32, so they add nothing. A wrong index or a dropped term is O(|a||b|),
 * orders of magnitude above this.
 */
function gemmBound(
  a: F64,
  b: F64,
  o: ref.GemmRefOptions,
  c0: F64 | undefined,
  extra = 0,
): F64 {
  const abs = (x: ArrayLike<number>) => Float64Array.from(x, Math.abs);
  const bound = ref.gemm(abs(a), abs(b), {
    ...o,
    alpha: Math.abs(o.alpha ?? 1),
    beta: Math.abs(o.beta ?? 0),
    bias: o.bias ? abs(o.bias) : undefined,
  }, c0 ? abs(c0) : undefined);
  const f = (o.k + 4 + extra) * U * 1.001;
  return bound.map((v) => v * f);
}

function assertWithin(what: string, got: ArrayLike<number>, want: F64, bound: F64): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  }
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= bound[i])) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} ` +
          `(|d| = ${d.toExponential(3)} > bound ${bound[i].toExponential(3)})`,
      );
    }
  }
}

const f32 = (x: F64) => Float32Array.from(x);

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
  /** which operands carry a batch (false = shared) */
  batchA?: boolean;
  batchB?: boolean;
  config?: MatmulConfig;
  /** out starts as NaN (beta must be 0) */
  nanOut?: boolean;
}

/** Runs one gemm on random inputs and checks it against the reference; returns the output. */
async function checkGemm(e: Engine, rng: Rng, c: Case, what: string): Promise<Float32Array> {
  const batch = c.batch ?? 1;
  const sA = batch > 1 && c.batchA !== false ? c.m * c.k : 0;
  const sB = batch > 1 && c.batchB !== false ? c.k * c.n : 0;
  const sC = c.m * c.n;
  const a = rng.randn((sA ? batch : 1) * c.m * c.k);
  const b = rng.randn((sB ? batch : 1) * c.k * c.n);
  const bias = c.bias ? rng.randn(c.n) : undefined;
  const c0 = c.nanOut ? new Float64Array(batch * sC).fill(NaN) : rng.randn(batch * sC);
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
  const ta = e.tensor(f32(a), [a.length]), tb = e.tensor(f32(b), [b.length]);
  const tc = e.tensor(f32(c0), [c0.length]);
  const tbias = bias ? e.tensor(f32(bias), [c.n]) : undefined;
  const opts: GemmOptions = { ...o, bias: tbias, config: c.config };
  gemm(tc, ta, tb, opts);
  const got = (await e.read(tc)) as Float32Array;
  const want = ref.gemm(a, b, o, c0);
  const split = c.config && c.config.splitK > 1 ? c.config.splitK : 0;
  assertWithin(what, got, want, gemmBound(a, b, o, c.nanOut ? undefined : c0, split));
  for (const t of [ta, tb, tc, tbias]) t?.dispose();
  return got;
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const tname = (tA?: boolean, tB?: boolean) => `${tA ? "T" : "N"}${tB ? "T" : "N"}`;

// ------------------------------------------------------------ references

Deno.test("matmul ref: gradients match finite differences (all transposes, batched, shared)", () => {
  // matmul is bilinear: central differences are exact up to f64 rounding (~1e-10 here)
  const rng = new Rng(11);
  const M = 3, K = 4, N = 5, B = 2;
  for (const [tA, tB] of TRANS) {
    for (const [a3, b3] of [[false, false], [true, true], [true, false], [false, true]]) {
      const aShape = tA ? [K, M] : [M, K], bShape = tB ? [N, K] : [K, N];
      const as = a3 ? [B, ...aShape] : aShape, bs = b3 ? [B, ...bShape] : bShape;
      const a = rng.randn(as.reduce((x, y) => x * y)), b = rng.randn(bs.reduce((x, y) => x * y));
      const g = rng.randn((a3 || b3 ? B : 1) * M * N);
      const f = () => dot(ref.matmul(a, as, b, bs, tA, tB), g);
      const [ga, gb] = ref.matmulBackward(a, as, b, bs, g, tA, tB);
      const what = `matmul ${tname(tA, tB)} a${as.length} b${bs.length}`;
      checkFiniteDiff(`${what} da`, f, a, ga);
      checkFiniteDiff(`${what} db`, f, b, gb);
    }
  }
  const T = 6, I = 4, O = 3;
  const x = rng.randn(T * I), w = rng.randn(O * I), bias = rng.randn(O), g = rng.randn(T * O);
  const f = () => dot(ref.linear(x, w, bias, T, I, O), g);
  const [gx, gw, gb] = ref.linearBackward(x, w, g, T, I, O);
  checkFiniteDiff("linear dx", f, x, gx);
  checkFiniteDiff("linear dw", f, w, gw);
  checkFiniteDiff("linear db", f, bias, gb);
});

Deno.test("matmul ref: gemm reference agrees with matmul reference", () => {
  const rng = new Rng(12);
  for (const [tA, tB] of TRANS) {
    const M = 4, K = 3, N = 5;
    const a = rng.randn(2 * M * K), b = rng.randn(K * N);
    const mm = ref.matmul(a, [2, ...(tA ? [K, M] : [M, K])], b, tB ? [N, K] : [K, N], tA, tB);
    const gm = ref.gemm(a, b, {
      m: M,
      n: N,
      k: K,
      transA: tA,
      transB: tB,
      batch: 2,
      strideA: M * K,
      strideB: 0,
    });
    for (let i = 0; i < mm.length; i++) {
      if (Math.abs(mm[i] - gm[i]) > 1e-12) throw new Error(`gemm ref ≠ matmul ref at ${i}`);
    }
  }
});

// ------------------------------------------------------------ gemm forward

gpuTest("matmul: gemm, all transposes × awkward sizes vs reference (default config)", async (e) => {
  const rng = new Rng(21);
  // odd sizes: scalar loaders; multiples of 4: vec4 loaders and stores
  const sizes = [[1, 1, 1], [37, 53, 29], [130, 67, 259], [257, 129, 65], [68, 36, 44]];
  for (const [m, n, k] of sizes) {
    for (const [tA, tB] of TRANS) {
      await checkGemm(
        e,
        rng,
        { m, n, k, transA: tA, transB: tB },
        `gemm ${tname(tA, tB)} ${m}x${n}x${k}`,
      );
    }
  }
});

gpuTest("matmul: gemm alpha, beta, bias; beta = 0 ignores NaN in out", async (e) => {
  const rng = new Rng(22);
  for (const [m, n, k] of [[37, 53, 29], [36, 52, 28]]) {
    await checkGemm(
      e,
      rng,
      { m, n, k, transB: true, alpha: -0.75, beta: 0.5, bias: true },
      `gemm NT α β bias ${m}x${n}x${k}`,
    );
    await checkGemm(
      e,
      rng,
      { m, n, k, transB: true, bias: true, nanOut: true },
      `gemm NT bias, NaN out ${m}x${n}x${k}`,
    );
  }
  await checkGemm(e, rng, { m: 33, n: 17, k: 9, transA: true, alpha: 2, beta: 1 }, "gemm TN β=1");
});

gpuTest("matmul: gemm batched (strided, shared B, shared A) and offsets", async (e) => {
  const rng = new Rng(23);
  for (const [tA, tB] of TRANS) {
    await checkGemm(
      e,
      rng,
      { m: 19, n: 23, k: 13, batch: 3, transA: tA, transB: tB },
      `batched ${tname(tA, tB)}`,
    );
  }
  await checkGemm(e, rng, { m: 37, n: 21, k: 29, batch: 4, batchB: false }, "shared B");
  await checkGemm(e, rng, { m: 37, n: 21, k: 29, batch: 2, batchA: false, beta: 0.5 }, "shared A");
  // element offsets and explicit sizes on flat tensors (how callers address chunks)
  const a = rng.randn(5 + 7 * 9), b = rng.randn(3 + 9 * 6), c0 = rng.randn(2 + 7 * 6);
  const ta = e.tensor(f32(a), [a.length]), tb = e.tensor(f32(b), [b.length]);
  const tc = e.tensor(f32(c0), [c0.length]);
  const o = { m: 7, n: 6, k: 9, offsetA: 5, offsetB: 3, offsetOut: 2, beta: 1 };
  gemm(tc, ta, tb, o);
  assertWithin("offsets", await readF64(tc), ref.gemm(a, b, o, c0), gemmBound(a, b, o, c0));
  // shapes inferred from rank-3 tensors
  const A3 = e.tensor(f32(rng.randn(2 * 3 * 4)), [2, 3, 4]);
  const B2 = e.tensor(f32(rng.randn(4 * 5)), [4, 5]);
  const C3 = e.empty([2, 3, 5]);
  gemm(C3, A3, B2);
  const want = ref.gemm(await readF64(A3), await readF64(B2), {
    m: 3,
    n: 5,
    k: 4,
    batch: 2,
    strideA: 12,
    strideB: 0,
  });
  assertWithin(
    "inferred batch",
    await readF64(C3),
    want,
    gemmBound(await readF64(A3), await readF64(B2), {
      m: 3,
      n: 5,
      k: 4,
      batch: 2,
      strideA: 12,
      strideB: 0,
    }, undefined),
  );
  for (const t of [ta, tb, tc, A3, B2, C3]) t.dispose();
});

gpuTest(
  "matmul: split-K (fixed-order reduction) with alpha, beta, bias is deterministic",
  async (e) => {
    const rng = new Rng(24);
    const cfg = { ...CONFIG_CPU, splitK: 3 };
    e.profile = new Map();
    await checkGemm(
      e,
      rng,
      { m: 37, n: 53, k: 259, alpha: 0.5, beta: -1, bias: true, config: cfg },
      "split-K NN scalar",
    );
    const names = [...e.profile.keys()];
    e.profile = null;
    // one partial-product dispatch (3 slices in its grid), one fixed-order reduction
    assertEquals(names.filter((n) => n.startsWith("gemm_")).length, 2);
    assertEquals(names.some((n) => n.startsWith("gemm_splitk_reduce")), true);
    await checkGemm(e, rng, {
      m: 36,
      n: 52,
      k: 260,
      transA: true,
      config: { ...CONFIG_CPU, splitK: 4 },
    }, "split-K TN vec4");
    // determinism: the same inputs twice give bit-identical outputs
    const r1 = await checkGemm(
      e,
      new Rng(5),
      { m: 37, n: 53, k: 259, config: cfg },
      "split-K run 1",
    );
    const r2 = await checkGemm(
      e,
      new Rng(5),
      { m: 37, n: 53, k: 259, config: cfg },
      "split-K run 2",
    );
    assertEquals(new Uint32Array(r1.buffer), new Uint32Array(r2.buffer));
  },
);

gpuTest("matmul: the GPU tile configs on awkward sizes (every loader and layout)", async (e) => {
  const rng = new Rng(25);
  // together these reach every loader form (K-contiguous tiles stored transposed, others stored
  // as read; vec4 and scalar), both buffering schemes and thread layouts, partial slots (bk = 4:
  // fewer tile elements than threads) and every epilogue (vec4 / scalar, beta, bias)
  const cases: [MatmulConfig, Case][] = [
    [CONFIG_LARGE, { m: 257, n: 129, k: 65, transB: true, bias: true }],
    [CONFIG_LARGE, { m: 132, n: 260, k: 36, beta: -2 }],
    [{ ...CONFIG_LARGE, stages: 1, warp: false }, {
      m: 130,
      n: 67,
      k: 259,
      transA: true,
      transB: true,
    }],
    [CONFIG_MEDIUM, { m: 68, n: 132, k: 40, transA: true, beta: 0.5 }],
    [CONFIG_SMALL_M, { m: 5, n: 129, k: 33, transB: true, bias: true }],
    [CONFIG_SMALL_N, { m: 130, n: 3, k: 17, transA: true, batch: 2 }],
    [CONFIG_TINY, { m: 17, n: 19, k: 23, transA: true, transB: true }],
    [{ ...CONFIG_CPU, bk: 4 }, { m: 37, n: 44, k: 20, bias: true }],
  ];
  for (const [cfg, c] of cases) {
    const name = `${cfg.bm}x${cfg.bn}x${cfg.bk} ${tname(c.transA, c.transB)} ${c.m}x${c.n}x${c.k}`;
    await checkGemm(e, rng, { ...c, config: { ...cfg, splitK: 1 } }, name);
  }
});

gpuTest("matmul: tuning table, candidate configs and heuristics", (e) => {
  const s = { m: 37, n: 53, k: 29, transA: false, transB: false, batch: 1 };
  const key = matmulKey(s);
  assertEquals(key, "NN:37x53x29:b1");
  setMatmulConfig(key, CONFIG_TINY);
  assertEquals(selectMatmulConfig(e, s), CONFIG_TINY);
  setMatmulConfig(key, null);
  const cands = matmulConfigs(e, { ...s, m: 1024, n: 1024, k: 16384 });
  if (cands.length < 4) throw new Error(`only ${cands.length} candidate configs`);
  for (const c of cands) {
    const t = (c.bm / c.tm) * (c.bn / c.tn);
    if (t > e.limits.maxComputeInvocationsPerWorkgroup) {
      throw new Error("candidate over the thread limit");
    }
  }
});

// ------------------------------------------------------------ differentiable

function randParam(e: Engine, rng: Rng, shape: number[]): [Tensor, F64] {
  const v = rng.randn(shape.reduce((x, y) => x * y, 1));
  return [param(e, v, shape), v];
}

gpuTest("matmul: forward and backward vs reference (transposes × batched / shared)", async (e) => {
  const rng = new Rng(31);
  const B = 3, M = 13, K = 7, N = 11;
  for (const [tA, tB] of TRANS) {
    for (const [a3, b3] of [[false, false], [true, true], [true, false], [false, true]]) {
      const aS = [...(a3 ? [B] : []), ...(tA ? [K, M] : [M, K])];
      const bS = [...(b3 ? [B] : []), ...(tB ? [N, K] : [K, N])];
      const [ta, a] = randParam(e, rng, aS);
      const [tb, b] = randParam(e, rng, bS);
      const batched = a3 || b3;
      const g = rng.randn((batched ? B : 1) * M * N);
      const tg = e.tensor(f32(g), batched ? [B, M, N] : [M, N]);
      const y = matmul(ta, tb, { transA: tA, transB: tB });
      const what = `matmul ${tname(tA, tB)} a${aS.length} b${bS.length}`;
      const want = ref.matmul(a, aS, b, bS, tA, tB);
      const abs = (x: F64) => x.map(Math.abs);
      // forward: K-term dot products (see gemmBound)
      const fb = ref.matmul(abs(a), aS, abs(b), bS, tA, tB).map((v) => v * (K + 4) * U * 1.001);
      assertWithin(`${what} forward`, await readF64(y), want, fb);
      backward(y, tg);
      const [ga, gb] = ref.matmulBackward(a, aS, b, bS, g, tA, tB);
      const [ba, bb] = ref.matmulBackward(abs(a), aS, abs(b), bS, abs(g), tA, tB);
      // dA sums N terms per batch entry (B·N when A is shared), dB sums M (B·M when B is shared);
      // the leaf gradient starts at 0, so the accumulation into it adds one exact add
      const nA = (a3 ? 1 : B) * N + 4, nB = (b3 ? 1 : B) * M + 4;
      assertWithin(`${what} dA`, await readF64(ta.grad!), ga, ba.map((v) => v * nA * U * 1.001));
      assertWithin(`${what} dB`, await readF64(tb.grad!), gb, bb.map((v) => v * nB * U * 1.001));
      for (const t of [ta, tb, tg, y, ta.grad!, tb.grad!]) t.dispose();
    }
  }
});

gpuTest("matmul: linear forward/backward, returned and ACCUMULATED gradient paths", async (e) => {
  const rng = new Rng(32);
  const lead = [3, 7], T = 21, I = 37, O = 29;
  const x = rng.randn(T * I), w = rng.randn(O * I), bias = rng.randn(O), g = rng.randn(T * O);
  const w0 = rng.randn(O * I), b0 = rng.randn(O), x0 = rng.randn(T * I);
  const abs = (v: F64) => v.map(Math.abs);
  const want = ref.linear(x, w, bias, T, I, O);
  const [gx, gw, gb] = ref.linearBackward(x, w, g, T, I, O);
  const [bx, bw, bb] = ref.linearBackward(abs(x), abs(w), abs(g), T, I, O);
  const fwdBound = ref.linear(abs(x), abs(w), abs(bias), T, I, O).map((v) =>
    v * (I + 4) * U * 1.001
  );
  for (const leaves of [true, false]) {
    // leaves: x, W and b are parameter leaves whose .grad already holds x0/w0/b0, so linear adds
    // into them (gemm beta = 1, sumRowsInto accumulate) and returns ACCUMULATED; else they are
    // produced by an op (clone) and the gradients are returned and routed by the tape
    const px = param(e, x, [...lead, I]), pw = param(e, w, [O, I]), pb = param(e, bias, [O]);
    if (leaves) {
      px.grad = e.tensor(f32(x0), [...lead, I]);
      pw.grad = e.tensor(f32(w0), [O, I]);
      pb.grad = e.tensor(f32(b0), [O]);
    }
    const [ix, iw, ib] = leaves ? [px, pw, pb] : [clone(px), clone(pw), clone(pb)];
    const y = linear(ix, iw, ib);
    assertEquals(y.shape, [...lead, O]);
    assertWithin(`linear forward (leaves=${leaves})`, await readF64(y), want, fwdBound);
    backward(y, e.tensor(f32(g), [...lead, O]));
    const add = (v: F64, base: F64) => leaves ? v.map((s, i) => s + base[i]) : v;
    // dx sums O terms, dW sums T terms, db T terms; +1 rounding for the add into .grad
    const bnd = (v: F64, n: number, base: F64) =>
      v.map((s, i) => (s + (leaves ? Math.abs(base[i]) : 0)) * (n + 5) * U * 1.001);
    assertWithin(
      `linear dx (leaves=${leaves})`,
      await readF64(px.grad!),
      add(gx, x0),
      bnd(bx, O, x0),
    );
    assertWithin(
      `linear dW (leaves=${leaves})`,
      await readF64(pw.grad!),
      add(gw, w0),
      bnd(bw, T, w0),
    );
    assertWithin(
      `linear db (leaves=${leaves})`,
      await readF64(pb.grad!),
      add(gb, b0),
      bnd(bb, T, b0),
    );
    for (const t of [px, pw, pb, y, px.grad!, pw.grad!, pb.grad!]) t.dispose();
    if (!leaves) { for (const t of [ix, iw, ib]) t.dispose(); }
  }
});

gpuTest("matmul: linear without bias and with frozen inputs skips their gradients", async (e) => {
  const rng = new Rng(33);
  const T = 9, I = 12, O = 8;
  const x = rng.randn(T * I), w = rng.randn(O * I), g = rng.randn(T * O);
  const tx = e.tensor(f32(x), [T, I]); // requiresGrad = false
  const pw = param(e, w, [O, I]);
  const y = linear(tx, pw);
  backward(y, e.tensor(f32(g), [T, O]));
  const [, gw] = ref.linearBackward(x, w, g, T, I, O);
  const [, bw] = ref.linearBackward(x.map(Math.abs), w, g.map(Math.abs), T, I, O);
  assertWithin("dW", await readF64(pw.grad!), gw, bw.map((v) => v * (T + 5) * U * 1.001));
  assertEquals(tx.grad, null);
  for (const t of [tx, pw, y, pw.grad!]) t.dispose();
});

gpuTest(
  "matmul: gemm is deterministic (bit-identical reruns) and the pool returns to its level",
  async (e) => {
    const rng = new Rng(41);
    const live0 = e.stats().live;
    const a = e.tensor(f32(rng.randn(130 * 259)), [130, 259]);
    const b = e.tensor(f32(rng.randn(259 * 67)), [259, 67]);
    const c1 = e.empty([130, 67]), c2 = e.empty([130, 67]);
    fill(c2, 7);
    gemm(c1, a, b);
    gemm(c2, a, b);
    assertEquals(
      new Uint32Array((await e.read(c1)).buffer),
      new Uint32Array((await e.read(c2)).buffer),
    );
    for (const t of [a, b, c1, c2]) t.dispose();
    assertEquals(e.stats().live, live0);
  },
);
