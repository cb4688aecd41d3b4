/**
 * f16 mixed-precision kernels against float64 references.
 *
 * Tolerances (derived, not fitted): u16 = 2^-11 is f16's unit roundoff
 * (round to nearest), u32 = 2^-24 f32's. A cast of x in f16's normal range
 * errs by at most u16·|x|; below 2^-14 (subnormals, spacing 2^-24) by at most
 * 2^-25. A product of two f16-rounded inputs errs by at most (2u16 + u16²)
 * of |a||b| (the product itself is exact in f32), and an f32 sum of K terms
 * by at most K·u32 of Σ|terms| (the classical bound γ_K). So every GEMM
 * output (i, j) must be within (2u16 + u16² + (K + 2)·u32)·Σ_p |a_ip||b_pj|
 * of the float64 product of the unrounded inputs (+2: alpha/beta and bias
 * roundings). A GEMM that sums runs of P products in f16 before flushing them
 * into f32 (kernels/f16/gemm.ts gemmF16PartialSums: 0 where it widens to f32 on CPU
 * adapters, the packed kernel's longest flush on GPUs) adds P·u16 (γ_P in
 * f16) and 2^-25 per product in f16's subnormal range.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { castToF16, castToF32, SCALER } from "../../kernels/f16/cast.ts";
import { gemmF16, gemmF16PartialSums } from "../../kernels/f16/gemm.ts";
import { linearF16 } from "../../kernels/f16/linear.ts";
import { Autocast } from "../../kernels/f16/autocast.ts";
import * as ref from "../../kernels/matmul/reference.ts";
import { f16Bits, f16Value, roundF16 } from "../../tensor/f16.ts";
import { backward } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import type { Engine } from "../../tensor/engine.ts";
import { gpuTest, readF64, Rng } from "../helpers.ts";

const U16 = 2 ** -11, U32 = 2 ** -24;
/** f16 partial-sum length of the GEMM path that runs on the test's engine (set per test) */
let GEMM_F16_PARTIAL_SUMS = 0;

/** The values every cast test runs through: normals, subnormals, ties, overflow, specials. */
function castInputs(rng: Rng, n: number): Float32Array {
  const special = [
    0,
    -0,
    1,
    -1,
    65504,
    -65504,
    65519.99,
    65520,
    -65520,
    1e6,
    -1e30,
    Infinity,
    -Infinity,
    NaN,
    2 ** -14,
    2 ** -15,
    2 ** -24,
    2 ** -25,
    1.5 * 2 ** -25,
    2 ** -26,
    3 * 2 ** -25,
    -(2 ** -24),
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -11 + 2 ** -20,
    2049,
    2051,
    1e-40,
    6.1e-5,
  ];
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (i < special.length) out[i] = special[i];
    else {
      // log-uniform magnitudes over f16's whole range and beyond
      const mag = 2 ** (rng.next() * 50 - 30);
      out[i] = (rng.next() < 0.5 ? -1 : 1) * mag;
    }
  }
  return out;
}

gpuTest(
  "f16 cast: f32 -> f16 is IEEE nearest-even, bit-exact to the host; f16 -> f32 exact",
  async (e) => {
    const rng = new Rng(11);
    for (const n of [1, 2, 3, 1037, 4096 + 5]) {
      const x = castInputs(rng, n);
      const xt = e.tensor(x, [n]);
      const h = castToF16(xt);
      const back = castToF32(h);
      const got = await e.readF32(back);
      for (let i = 0; i < n; i++) {
        const want = f16Value(f16Bits(x[i]));
        const ok = Number.isNaN(want) ? Number.isNaN(got[i]) : Object.is(got[i], want);
        if (!ok) {
          throw new Error(
            `n=${n} element ${i}: cast(${x[i]}) = ${got[i]}, expected ${want}`,
          );
        }
        // against float64: the derived bound
        const v = x[i], a = Math.abs(v);
        if (!Number.isFinite(v) || a >= 65520) continue;
        const bound = a >= 2 ** -14 ? U16 * a : 2 ** -25;
        if (!(Math.abs(got[i] - v) <= bound)) {
          throw new Error(`cast(${v}) = ${got[i]}: error over ${bound}`);
        }
      }
      // reads through the f16 tensor agree too
      assertEquals(Array.from(await e.readF32(h)), Array.from(got));
      for (const t of [xt, h, back]) t.dispose();
    }
  },
);

gpuTest(
  "f16 cast: ranges, overflow flags the scaler state, the scaled cast multiplies first",
  async (e) => {
    const st = e.tensor(new Uint32Array(SCALER.words), [SCALER.words], "u32");
    const setScale = (s: number) => {
      const w = new Uint32Array(SCALER.words);
      new Float32Array(w.buffer)[SCALER.scale] = s;
      e.upload(st, w);
    };
    setScale(1024);
    const x = e.tensor([1, 2, 3, 60, 70, 0.5, 2 ** -30], [7]);
    // a range, unflagged
    const r = castToF16(x, { offset: 1, count: 3 });
    assertEquals(Array.from(await e.readF32(r)), [2, 3, 60]);
    // flagged cast of finite values: no flag
    castToF16(x, { state: st, flag: true }).dispose();
    assertEquals((await e.read(st))[SCALER.foundInf], 0);
    // scaled: 60·1024 = 61440 fits, 70·1024 = 71680 overflows -> Inf and the flag
    const s = castToF16(x, { state: st, flag: true, scaled: true });
    const got = await e.readF32(s);
    assertEquals(Array.from(got), [1024, 2048, 3072, 61440, Infinity, 512, roundF16(2 ** -20)]);
    assertEquals((await e.read(st))[SCALER.foundInf], 1);
    // NaN also flags
    setScale(1);
    const nan = e.tensor([1, NaN, 3], [3]);
    castToF16(nan, { state: st, flag: true }).dispose();
    assertEquals((await e.read(st))[SCALER.foundInf], 1);
    // f16 -> f32 range at an odd element offset
    const w = castToF32(s, { offset: 3, count: 3 });
    assertEquals(Array.from(await e.readF32(w)), [61440, Infinity, 512]);
    for (const t of [st, x, r, s, nan, w]) t.dispose();
  },
);

/** Σ_p |a||b| for the GEMM bound, by the same reference GEMM on absolute values. */
function absGemm(a: Float64Array, b: Float64Array, o: ref.GemmRefOptions): Float64Array {
  return ref.gemm(a.map(Math.abs), b.map(Math.abs), { ...o, alpha: 1, beta: 0, bias: undefined });
}

function checkBound(
  what: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  mag: ArrayLike<number>,
  K: number,
  extra: ArrayLike<number> | null = null,
): void {
  // + P·u16 when the GEMM sums runs of P products in f16 before flushing them into f32
  const P = GEMM_F16_PARTIAL_SUMS;
  const c = 2 * U16 + U16 * U16 + P * U16 + (K + 2) * U32;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const bound = c * mag[i] + (extra ? U32 * 2 * Math.abs(extra[i]) : 0) +
      (P ? K * 2 ** -25 : 0) + 1e-30;
    const err = Math.abs(got[i] - want[i]);
    worst = Math.max(worst, err / bound);
    if (!(err <= bound)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} want ${want[i]}: |err| ${err} > ${bound}`,
      );
    }
  }
  assert(worst <= 1, `${what}: worst ratio ${worst}`);
}

gpuTest(
  "f16 gemm: f16 inputs, f32 accumulation vs float64 (awkward sizes, transposes, offsets)",
  async (e) => {
    GEMM_F16_PARTIAL_SUMS = gemmF16PartialSums(e);
    const rng = new Rng(12);
    const cases = [
      { m: 37, n: 29, k: 53, transA: false, transB: false },
      { m: 64, n: 33, k: 130, transA: false, transB: true },
      { m: 5, n: 71, k: 17, transA: true, transB: false },
      { m: 19, n: 8, k: 300, transA: true, transB: true, alpha: 0.5, beta: 1 },
      { m: 13, n: 11, k: 7, transA: false, transB: true, offsetA: 14, offsetB: 6, bias: true },
      { m: 6, n: 10, k: 9, transA: false, transB: false, batch: 3, strideA: 54, strideB: 90 },
    ];
    for (const c of cases) {
      const batch = c.batch ?? 1;
      const sizeA = (c.offsetA ?? 0) + (batch - 1) * (c.strideA ?? 0) + c.m * c.k;
      const sizeB = (c.offsetB ?? 0) + (batch - 1) * (c.strideB ?? 0) + c.k * c.n;
      const a = rng.randn(sizeA), b = rng.randn(sizeB, 0.3);
      const outSize = batch * c.m * c.n;
      const c0 = rng.randn(outSize);
      const bias = c.bias ? rng.randn(c.n) : undefined;
      const o: ref.GemmRefOptions = { ...c, bias, strideOut: c.m * c.n };
      const want = ref.gemm(a, b, o, c0);
      const mag = absGemm(a, b, o);
      const a16 = castToF16(e.tensor(Float32Array.from(a), [sizeA]));
      const b16 = castToF16(e.tensor(Float32Array.from(b), [sizeB]));
      const out = e.tensor(Float32Array.from(c0), [outSize]);
      const biasT = bias ? e.tensor(Float32Array.from(bias), [c.n]) : undefined;
      gemmF16(out, a16, b16, { ...c, bias: biasT, batch, strideOut: c.m * c.n });
      const got = await readF64(out);
      checkBound(
        `gemmF16 ${JSON.stringify(c)}`,
        got,
        want,
        mag.map((v) => v * (c.alpha ?? 1)),
        c.k,
        want,
      );
      // against the f16-rounded inputs the only error is f32 accumulation
      const wantR = ref.gemm(a.map(roundF16), b.map(roundF16), o, c0);
      const magR = absGemm(a.map(roundF16), b.map(roundF16), o);
      for (let i = 0; i < wantR.length; i++) {
        const bound =
          (GEMM_F16_PARTIAL_SUMS * U16 + (c.k + 2) * U32) * (magR[i] + Math.abs(wantR[i])) +
          c.k * 2 ** -25 * Math.min(1, GEMM_F16_PARTIAL_SUMS) + 1e-30;
        if (!(Math.abs(got[i] - wantR[i]) <= bound)) {
          throw new Error(`gemmF16 rounded-input check element ${i}: ${got[i]} vs ${wantR[i]}`);
        }
      }
      for (const t of [a16, b16, out, biasT]) t?.dispose();
    }
  },
);

async function linearCase(e: Engine, T: number, inF: number, outF: number, withBias: boolean) {
  const rng = new Rng(13 + T);
  const x = rng.randn(T * inF), w = rng.randn(outF * inF, 0.2), g = rng.randn(T * outF);
  const b = withBias ? rng.randn(outF) : null;
  const ac = new Autocast(e, null);
  const xt = e.tensor(Float32Array.from(x), [T, inF]);
  xt.requiresGrad = true;
  const wt = e.tensor(Float32Array.from(w), [outF, inF]);
  wt.requiresGrad = true;
  const bt = b ? e.tensor(Float32Array.from(b), [outF]) : undefined;
  if (bt) bt.requiresGrad = true;
  const gt = e.tensor(Float32Array.from(g), [T, outF]);
  const y = tidy(() => {
    const y = linearF16(ac, xt, wt, bt);
    backward(y, gt);
    return y;
  });
  const what = `linearF16 T=${T} in=${inF} out=${outF} bias=${withBias}`;
  const want = ref.linear(x, w, b, T, inF, outF);
  const mag = ref.linear(x.map(Math.abs), w.map(Math.abs), null, T, inF, outF);
  checkBound(`${what} y`, await readF64(y), want, mag, inF, want);
  const [gx, gw, gb] = ref.linearBackward(x, w, g, T, inF, outF);
  const [mx, mw] = ref.linearBackward(
    x.map(Math.abs),
    w.map(Math.abs),
    g.map(Math.abs),
    T,
    inF,
    outF,
  );
  checkBound(`${what} dx`, await readF64(xt.grad!), gx, mx, outF);
  checkBound(`${what} dW`, await readF64(wt.grad!), gw, mw, T);
  if (bt) {
    // the bias gradient is an f32 sum of the (f32) incoming gradient: T·u32 of Σ|g|
    const mb = new Float64Array(outF);
    for (let t = 0; t < T; t++) for (let o = 0; o < outF; o++) mb[o] += Math.abs(g[t * outF + o]);
    const got = await readF64(bt.grad!);
    for (let o = 0; o < outF; o++) {
      assert(Math.abs(got[o] - gb[o]) <= T * U32 * mb[o] + 1e-30, `${what} db[${o}]`);
    }
  }
  // the f16 copy of the weight is cast once per version
  const w16a = ac.weight(wt), w16b = ac.weight(wt);
  assert(w16a === w16b, "weight copy reused");
  for (const t of [xt, wt, bt, gt, y, xt.grad, wt.grad, bt?.grad]) t?.dispose();
  ac.destroy();
}

gpuTest("f16 linear: forward and gradients vs float64 (awkward sizes)", async (e) => {
  GEMM_F16_PARTIAL_SUMS = gemmF16PartialSums(e);
  await linearCase(e, 37, 19, 23, false);
  await linearCase(e, 70, 64, 33, true);
  await linearCase(e, 1, 5, 3, true);
});

/**
 * SwiGLU with f16-saved inputs: the output is the fp32 kernel's (bit for bit); the gradients are
 * computed from u, g rounded to f16. With |Δg| ≤ u16|g|, |Δu| ≤ u16|u| and |silu'| ≤ 1.1,
 * |silu''| ≤ 0.5: |Δdu| ≤ |dy|·1.1·u16|g| and |Δdg| ≤ |dy|·u16·(|u||silu'(g)| + 1.1·0.5|u||g|
 * + 1.1|u|), plus f32 evaluation error (exp to ~2 ulp; 16·u32 of the terms' size).
 */
gpuTest(
  "f16 swiglu: output as fp32, gradients vs float64 within the f16-input bound",
  async (e) => {
    const { swigluF16 } = await import("../../kernels/f16/swiglu.ts");
    const ew = await import("../../kernels/elementwise.ts");
    const rng = new Rng(21);
    const n = 2 * 1037 + 1; // odd: the last f16 word is half used
    const u = rng.randn(n, 2), g = rng.randn(n, 3), dy = rng.randn(n);
    const ac = new Autocast(e, null);
    const ut = e.tensor(Float32Array.from(u), [n]), gt = e.tensor(Float32Array.from(g), [n]);
    ut.requiresGrad = gt.requiresGrad = true;
    const dyt = e.tensor(Float32Array.from(dy), [n]);
    const y = tidy(() => {
      const y = swigluF16(ac, ut, gt);
      backward(y, dyt);
      return y;
    });
    const y32 = ew.swiglu(e.tensor(Float32Array.from(u), [n]), e.tensor(Float32Array.from(g), [n]));
    assertEquals(Array.from(await e.readF32(y)), Array.from(await e.readF32(y32)));
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    const silu = (x: number) => x * sig(x);
    const siluGrad = (x: number) => sig(x) * (1 + x * (1 - sig(x)));
    const du = await readF64(ut.grad!), dg = await readF64(gt.grad!);
    for (let i = 0; i < n; i++) {
      const wantU = dy[i] * silu(g[i]), wantG = dy[i] * u[i] * siluGrad(g[i]);
      const slop = 16 * U32;
      const bu = Math.abs(dy[i]) * 1.1 * U16 * Math.abs(g[i]) + slop * Math.abs(wantU) + 1e-30;
      const bg = Math.abs(dy[i]) * U16 * Math.abs(u[i]) *
          (Math.abs(siluGrad(g[i])) + 0.55 * Math.abs(g[i]) + 1.1) + slop * Math.abs(wantG) + 1e-30;
      if (!(Math.abs(du[i] - wantU) <= bu)) {
        throw new Error(
          `du[${i}] ${du[i]} vs ${wantU} > ${bu}`,
        );
      }
      if (!(Math.abs(dg[i] - wantG) <= bg)) {
        throw new Error(
          `dg[${i}] ${dg[i]} vs ${wantG} > ${bg}`,
        );
      }
    }
    for (const t of [ut, gt, dyt, y, y32, ut.grad, gt.grad]) t?.dispose();
    ac.destroy();
  },
);
