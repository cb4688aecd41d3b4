import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { softmax } from "../../kernels/softmax.ts";
import * as ref from "../../kernels/softmax_ref.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import {
  assertClose,
  checkFiniteDiff,
  compare,
  dot,
  type F64,
  gpuTest,
  param,
  readF64,
  Rng,
} from "../helpers.ts";

// Forward: y = exp(x − m)·(1/S) in f32. x − m is exact (Sterbenz) or one rounding, which
// is a relative error of |x − m|·2^-24 in exp (≤ 7e-6 for the std-20 case, |x − m| ≲ 120;
// beyond ~100 y underflows anyway); exp ≲ 3 ulp, the product and the reciprocal one ulp
// each; S = Σ exp is a sum of positive terms, ≤ 200 sequential per thread then an 8-level
// tree (≲ 1.2e-5 relative worst case, ~1e-6 typical). Every y > 0, so the check is
// relative: rtol 2e-5 (measured: ≤ 7e-6 with std-20 inputs, ≤ 2.6e-6 otherwise); atol =
// the smallest normal f32 (2^-126), as tails below it may be flushed to zero.
const TINY = 2 ** -126;
const FWD = { atol: TINY, rtol: 2e-5 };
// Backward: gx = y·(gy − d), d = Σ gy·y. The subtraction cancels, so the error scales with
// the magnitudes, not with |gx|: δgx_i ≤ δy_i·|gy_i − d| + y_i·δd, δd ≤ Σ_j |gy_j|·δy_j + the
// f32 rounding of the sum (≤ 200 sequential terms per thread, then a tree). With every y
// inside the forward budget (FWD.rtol = 2e-5 relative, which grows with |x − m|) this is
// ≤ y_i·(|gy_i| + Σ_j |gy_j·y_j|)·(2·2e-5 + sum error): k = 5e-5. Values below the f32
// normal range (y, gx) may be flushed, so their error is at least TINY.
const BWD_K = 5e-5;
function bwdCheck(
  what: string,
  got: F64,
  want: F64,
  y: F64,
  gy: F64,
  shape: number[],
  axis: number,
) {
  const a = axis < 0 ? axis + shape.length : axis;
  const n = shape[a], inner = shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const outer = want.length / (n * inner);
  const sums = new Float64Array(outer * inner); // Σ_j |gy·y| of every (outer, inner) line
  for (let i = 0; i < want.length; i++) {
    sums[Math.floor(i / (n * inner)) * inner + (i % inner)] += Math.abs(gy[i] * y[i]);
  }
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const s = sums[Math.floor(i / (n * inner)) * inner + (i % inner)];
    const tol = (BWD_K * y[i] + TINY) * (Math.abs(gy[i]) + s) + TINY;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= tol)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| ${d.toExponential(3)} > ${
          tol.toExponential(3)
        })`,
      );
    }
    worst = Math.max(worst, d / tol);
  }
  if (Deno.env.get("SOFTMAX_REPORT")) console.log(what, "error / tolerance", worst.toFixed(4));
}

Deno.test("softmax ref: gradient matches finite differences (last and middle axis)", () => {
  const rng = new Rng(1);
  for (const [shape, axis] of [[[3, 7], -1], [[2, 5, 3], 1], [[4, 2, 3], 0]] as const) {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = rng.randn(n, 2), dy = rng.randn(n);
    const y = ref.softmax(x, shape, axis);
    checkFiniteDiff(
      `softmax ${JSON.stringify(shape)} axis ${axis}`,
      () => dot(ref.softmax(x, shape, axis), dy),
      x,
      ref.softmaxBackward(y, dy, shape, axis),
    );
  }
});

async function check(
  e: Engine,
  rng: Rng,
  shape: number[],
  axis: number,
  opts: { std?: number; rowOffset?: number } = {},
): Promise<void> {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = rng.randn(n, opts.std ?? 3);
  if (opts.rowOffset) {
    // large per-row offsets: only a max-subtracted softmax survives these in f32
    const w = shape[shape.length - 1];
    for (let i = 0; i < n; i++) {
      x[i] = Math.fround(x[i] + opts.rowOffset * ((Math.floor(i / w) % 3) - 1));
    }
  }
  const dy = rng.randn(n);
  const tx = param(e, x, shape);
  const y = softmax(tx, axis);
  const tdy = e.tensor(Float32Array.from(dy), shape);
  const got = await readF64(y);
  const want = ref.softmax(x, shape, axis);
  const tag = `softmax ${JSON.stringify(shape)} axis ${axis}`;
  assertClose(`${tag} forward`, got, want, FWD);
  backward(y, tdy);
  const gx = await readF64(tx.grad!);
  const gwant = ref.softmaxBackward(want, dy, shape, axis);
  bwdCheck(`${tag} backward`, gx, gwant, want, dy, shape, axis);
  if (Deno.env.get("SOFTMAX_REPORT")) {
    console.log(tag, "forward max rel", compare(got, want).maxRel.toExponential(2));
  }
  for (const t of [tx, tx.grad!, y, tdy]) t.dispose();
}

gpuTest("softmax: last axis, rows 37, widths 1 / 3 / 4 / 257 / 1025 / 1028", async (e) => {
  const rng = new Rng(2);
  // 1, 3: one thread per row; 257, 1025: scalar segments; 4, 1028: vec4 (all register-cached)
  for (const w of [1, 3, 4, 257, 1025, 1028]) await check(e, rng, [37, w], -1);
});

gpuTest("softmax: long rows 2051 / 8196 / 50264 (two-pass reads, vocabulary width)", async (e) => {
  const rng = new Rng(3);
  await check(e, rng, [37, 2051], -1);
  await check(e, rng, [5, 8196], -1);
  await check(e, rng, [2, 3, 50264], -1);
});

gpuTest("softmax: stable under ±1e3 row offsets and wide inputs", async (e) => {
  const rng = new Rng(4);
  await check(e, rng, [37, 257], -1, { rowOffset: 1000 });
  await check(e, rng, [7, 1028], -1, { rowOffset: 1000 });
  await check(e, rng, [37, 31], -1, { std: 20 });
  // spreads of 2e4 inside a row: no NaN or Inf, the same values as the reference
  const x = new Float32Array(3 * 50).map((_, i) => 1e4 * ((i % 3) - 1) + (i % 7));
  const t = e.tensor(x, [3, 50]);
  const ty = softmax(t);
  const y = await readF64(ty);
  assertEquals(y.every((v) => Number.isFinite(v)), true);
  assertClose("softmax 1e4 spread", y, ref.softmax(Float64Array.from(x), [3, 50]), FWD);
  t.dispose();
  ty.dispose();
});

gpuTest("softmax: non-last axes (column kernel)", async (e) => {
  const rng = new Rng(5);
  await check(e, rng, [5, 37, 3], 1);
  await check(e, rng, [37, 5, 3], 0);
  await check(e, rng, [2, 7, 9, 5], 2);
  await check(e, rng, [2, 7, 9, 5], -4);
});

gpuTest("softmax: deterministic (bit-identical on repeat)", async (e) => {
  const rng = new Rng(6);
  const x = rng.randn(3 * 50264, 3);
  const t = e.tensor(Float32Array.from(x), [3, 50264]);
  const ya = softmax(t), yb = softmax(t);
  assertEquals(await e.read(ya), await e.read(yb));
  for (const u of [t, ya, yb]) u.dispose();
});
