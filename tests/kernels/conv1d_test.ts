import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { causalConv1d } from "../../kernels/conv1d.ts";
import * as ref from "../../kernels/conv1d_ref.ts";
import { clone } from "../../kernels/elementwise.ts";
import { siluGradScalar, siluScalar } from "../../kernels/elementwise_ref.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  type F64,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  param,
  readF64,
  Rng,
} from "../helpers.ts";

const REPORT = Deno.env.get("CONV_REPORT");
/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * y and gx are sums of ≤ K products (+ bias): K products and K additions in f32, so
 * |err| ≤ γ_{2K}·Σ|terms| ≤ 1.001·2K·u·Σ|terms| (Higham §3.1), a rigorous bound whatever
 * the order or FMA contraction. mag = Σ|terms|, from the reference run on |inputs|.
 */
const shortSum = (K: number) => 1.001 * 2 * K * U;

/**
 * gw sums B·L products through fixed trees: a lane sums ≤ 16 rows of its slice in order
 * (slices are ≤ 64 rows at these sizes), 4 lanes combine in 2 levels, then the ≤ 22 slices
 * go through reduce.ts's column sum (≤ 6 sequential per lane + 2 levels). With the product
 * and the add into an existing gradient the longest chain is ≤ 28 roundings; gb
 * (reduce.ts over ≤ 1400 rows: 11 slices of 128 rows, ≤ 16 sequential adds per lane
 * accumulator, then two short passes) ≤ 26. We allow 36 (Higham γ_n·Σ|terms|, a
 * rigorous bound for any tree of that depth); measured ≤ 0.05 of it.
 */
const LONG_SUM = 36 * 1.001 * U;

function within(what: string, got: ArrayLike<number>, want: F64, mag: F64, k: number) {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const tol = k * mag[i];
    if (!(d <= tol)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| ${d.toExponential(3)} > ` +
          `${tol.toExponential(3)})`,
      );
    }
    if (tol) worst = Math.max(worst, d / tol);
  }
  if (REPORT) console.log(what, "error / tolerance", worst.toFixed(4));
}

const abs = (a: F64) => a.map(Math.abs);
const bits = (a: Float32Array | Int32Array | Uint32Array) =>
  new Uint32Array(a.buffer, a.byteOffset, a.length);

Deno.test("conv1d ref: gradients match finite differences (x, w, bias)", () => {
  const rng = new Rng(1);
  const s = { B: 2, L: 5, C: 3, K: 3 };
  const x = rng.randn(30), w = rng.randn(9), b = rng.randn(3), gy = rng.randn(30);
  const f = () => dot(ref.causalConv1d(x, w, b, s), gy);
  const g = ref.causalConv1dBackward(x, w, gy, s);
  checkFiniteDiff("conv dx", f, x, g.gx, { samples: 30 });
  checkFiniteDiff("conv dw", f, w, g.gw, { samples: 9 });
  checkFiniteDiff("conv db", f, b, g.gb, { samples: 3 });
  // wider kernel than the sequence: taps before t = 0 drop out
  const s2 = { B: 1, L: 2, C: 2, K: 5 };
  const x2 = rng.randn(4), w2 = rng.randn(10), gy2 = rng.randn(4);
  const f2 = () => dot(ref.causalConv1d(x2, w2, null, s2), gy2);
  const g2 = ref.causalConv1dBackward(x2, w2, gy2, s2);
  checkFiniteDiff("conv K=5 dx", f2, x2, g2.gx, { samples: 4 });
  checkFiniteDiff("conv K=5 dw", f2, w2, g2.gw, { samples: 10 });
});

interface Case {
  B: number;
  L: number;
  C: number;
  K: number;
  bias: boolean;
  /** parameters are leaves (gradients accumulate into .grad) or go through a clone */
  leaf: boolean;
}

async function convCase(e: Engine, rng: Rng, c: Case) {
  const { B, L, C, K } = c;
  const s = { B, L, C, K };
  const tag = `B=${B} L=${L} C=${C} K=${K}${c.bias ? " bias" : ""}${c.leaf ? "" : " via clone"}`;
  const n = B * L * C;
  const x = rng.randn(n), w = rng.randn(C * K, 0.5), b = rng.randn(C), gy = rng.randn(n);
  const tx = param(e, x, [B, L, C]), tw = param(e, w, [C, 1, K]), tb = param(e, b, [C]);
  // leaves whose gradient buffers already hold values: the op must add into them
  const acc0 = c.leaf ? { w: rng.randn(C * K), b: rng.randn(C) } : null;
  if (acc0) {
    tw.grad = e.tensor(Float32Array.from(acc0.w), [C, 1, K]);
    tb.grad = e.tensor(Float32Array.from(acc0.b), [C]);
  }
  const owned: Tensor[] = [tx, tw, tb];
  const wIn = c.leaf ? tw : clone(tw), bIn = c.leaf ? tb : clone(tb);
  const y = causalConv1d(tx, wIn, c.bias ? bIn : undefined);
  owned.push(wIn, bIn, y);
  const want = ref.causalConv1d(x, w, c.bias ? b : null, s);
  const mag = ref.causalConv1d(abs(x), abs(w), c.bias ? abs(b) : null, s);
  within(`${tag} y`, await readF64(y), want, mag, shortSum(K + (c.bias ? 1 : 0)));
  const tgy = e.tensor(Float32Array.from(gy), [B, L, C]);
  owned.push(tgy);
  backward(y, tgy);
  const g = ref.causalConv1dBackward(x, w, gy, s);
  const gm = ref.causalConv1dBackward(abs(x), abs(w), abs(gy), s);
  within(`${tag} gx`, await readF64(tx.grad!), g.gx, gm.gx, shortSum(K));
  const gw = acc0 ? g.gw.map((v, i) => v + acc0.w[i]) : g.gw;
  const gwMag = acc0 ? gm.gw.map((v, i) => v + Math.abs(acc0.w[i])) : gm.gw;
  within(`${tag} gw`, await readF64(tw.grad!), gw, gwMag, LONG_SUM);
  if (c.bias) {
    const gb = acc0 ? g.gb.map((v, i) => v + acc0.b[i]) : g.gb;
    const gbMag = acc0 ? gm.gb.map((v, i) => v + Math.abs(acc0.b[i])) : gm.gb;
    within(`${tag} gb`, await readF64(tb.grad!), gb, gbMag, LONG_SUM);
  } else if (acc0) {
    // no bias in the op: its gradient buffer is untouched
    assertEquals(await e.read(tb.grad!), Float32Array.from(acc0.b));
  }
  for (const t of [...owned, tx.grad, tw.grad, tb.grad]) t?.dispose();
}

gpuTest(
  "causalConv1d: forward and backward vs reference (L = 1, 2, 37, 700; C = 129)",
  async (e) => {
    const rng = new Rng(2);
    const cases: Case[] = [
      { B: 2, L: 1, C: 129, K: 3, bias: true, leaf: true },
      { B: 3, L: 2, C: 129, K: 3, bias: false, leaf: true },
      { B: 2, L: 37, C: 129, K: 3, bias: true, leaf: false },
      { B: 2, L: 37, C: 129, K: 3, bias: false, leaf: false },
      { B: 1, L: 37, C: 5, K: 8, bias: true, leaf: true },
      { B: 2, L: 19, C: 66, K: 1, bias: true, leaf: false },
      // 1400 rows: 22 slices of 64 rows, so the partial rows go through reduce.ts's column sum
      { B: 2, L: 700, C: 65, K: 3, bias: true, leaf: true },
    ];
    for (const c of cases) await convCase(e, rng, c);
  },
);

gpuTest("causalConv1d: backward is bit-identical across runs", async (e) => {
  const rng = new Rng(3);
  const B = 3, L = 301, C = 129, K = 3, n = B * L * C;
  const x = rng.randn(n), w = rng.randn(C * K), b = rng.randn(C), gy = rng.randn(n);
  const tgy = e.tensor(Float32Array.from(gy), [B, L, C]);
  const runs: Uint32Array[][] = [];
  for (let r = 0; r < 2; r++) {
    const tx = param(e, x, [B, L, C]), tw = param(e, w, [C, 1, K]), tb = param(e, b, [C]);
    const y = causalConv1d(tx, tw, tb);
    backward(y, tgy);
    const out: Uint32Array[] = [];
    for (const t of [y, tx.grad!, tw.grad!, tb.grad!]) out.push(bits(await e.read(t)));
    runs.push(out);
    for (const t of [tx, tw, tb, y, tx.grad!, tw.grad!, tb.grad!]) t.dispose();
  }
  assertEquals(runs[0], runs[1]);
  tgy.dispose();
});

fixtureTest("causalConv1d: the BaseConv fixture (conv_out, conv weight grad, dx)", async (e) => {
  const f = await readSafetensors(`${FIXTURES}/baseconv.safetensors`);
  const get = (n: string) => Float64Array.from(tensorData(f, `conv.${n}`));
  const tol = (n: string) => fixtureTol(`conv.${n}`);
  const [B, L, D] = f.tensors.get("conv.x")!.shape;
  const [C, , K] = f.tensors.get("conv.conv.conv.weight")!.shape;
  const x = get("x"), wIn = get("in_proj.weight"), bIn = get("in_proj.bias");
  const wOut = get("out_proj.weight"), dy = get("dy");
  const rows = B * L, Z = 2 * C; // in_proj: D → [u1 | u2], 2C wide
  // the rest of the BaseConv mixer on the CPU in float64: z = x·W_inᵀ + b, u1 = z[:, :C]
  const z = new Float64Array(rows * Z);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < Z; o++) {
      let s = bIn[o];
      for (let i = 0; i < D; i++) s += x[r * D + i] * wIn[o * D + i];
      z[r * Z + o] = s;
    }
  }
  const u1 = new Float64Array(rows * C), u2 = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    for (let ch = 0; ch < C; ch++) {
      u1[r * C + ch] = z[r * Z + ch];
      u2[r * C + ch] = z[r * Z + C + ch];
    }
  }
  const tu1 = param(e, u1, [B, L, C]);
  const tw = param(e, get("conv.conv.weight"), [C, 1, K]);
  const c = causalConv1d(tu1, tw);
  // manifest tolerances (the fixture generator's suggested bounds from an fp32 re-run)
  assertClose("conv_out", await readF64(c), get("conv_out"), tol("conv_out"));
  // upstream gradient of conv_out: v = silu(c)·u2, y = v·W_outᵀ + b → gc = (dy·W_out)·u2·silu'(c)
  const cRef = ref.causalConv1d(u1, get("conv.conv.weight"), null, { B, L, C, K });
  const gc = new Float64Array(rows * C), gu2 = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    for (let ch = 0; ch < C; ch++) {
      let gv = 0;
      for (let o = 0; o < D; o++) gv += dy[r * D + o] * wOut[o * C + ch];
      const i = r * C + ch;
      gc[i] = gv * u2[i] * siluGradScalar(cRef[i]);
      gu2[i] = gv * siluScalar(cRef[i]);
    }
  }
  const tgc = e.tensor(Float32Array.from(gc), [B, L, C]);
  backward(c, tgc);
  assertClose(
    "grad conv.conv.weight",
    await readF64(tw.grad!),
    get("grad.conv.conv.weight"),
    tol("grad.conv.conv.weight"),
  );
  // dx = [gu1 | gu2]·W_in with gu1 from the GPU conv backward; in_proj.bias grad = Σ_rows
  const gu1 = await readF64(tu1.grad!);
  const dx = new Float64Array(rows * D), dbIn = new Float64Array(Z);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < Z; o++) {
      const gz = o < C ? gu1[r * C + o] : gu2[r * C + o - C];
      dbIn[o] += gz;
      for (let i = 0; i < D; i++) dx[r * D + i] += gz * wIn[o * D + i];
    }
  }
  assertClose("dx", dx, get("dx"), tol("dx"));
  assertClose("grad in_proj.bias", dbIn, get("grad.in_proj.bias"), tol("grad.in_proj.bias"));
  for (const t of [tu1, tw, c, tgc, tu1.grad!, tw.grad!]) t.dispose();
});
