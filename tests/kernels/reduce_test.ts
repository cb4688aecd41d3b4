import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { mean, sum, sumAll, sumRowsInto } from "../../kernels/reduce.ts";
import * as ref from "../../kernels/reduce_ref.ts";
import { backward } from "../../tensor/tape.ts";
import { checkFiniteDiff, dot, type F64, gpuTest, param, readF64, Rng } from "../helpers.ts";

/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * Tolerance of an fp32 sum of A terms against the float64 reference, per
 * output: any summation order (per-thread strides, trees, partial passes) is
 * a binary tree of A − 1 additions, so |err| ≤ γ_{A−1}·Σ|x| (Higham §4.2);
 * the mean's scale adds 2 roundings (1/A rounded to f32, then the product).
 * Bound: (A + 2)·u·|scale|·Σ|x|, the factor 1.001 covering γ's 1/(1 − A·u).
 */
function sumBound(x: F64, shape: number[], axis: number, scale: number): F64 {
  const A = ref.around(shape, axis)[1];
  return ref.sum(x.map(Math.abs), shape, axis).map((v) =>
    v * Math.abs(scale) * (A + 2) * U * 1.001
  );
}

function assertWithin(what: string, got: ArrayLike<number>, want: F64, bound: F64 | number): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  }
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const b = typeof bound === "number" ? bound * Math.abs(want[i]) : bound[i];
    if (!(d <= b)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| = ${d.toExponential(3)} > ${
          b.toExponential(3)
        })`,
      );
    }
  }
}

const f32 = (x: F64) => Float32Array.from(x);
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

Deno.test("reduce ref: sum / mean / sumAll gradients match finite differences", () => {
  // linear functions: central differences are exact up to f64 rounding
  const rng = new Rng(1);
  const shape = [3, 4, 5];
  const x = rng.randn(60);
  for (const axis of [0, 1, 2, -1]) {
    const g = rng.randn(60 / ref.around(shape, axis)[1]);
    checkFiniteDiff(
      `sum ${axis}`,
      () => dot(ref.sum(x, shape, axis), g),
      x,
      ref.sumBackward(g, shape, axis),
    );
    checkFiniteDiff(
      `mean ${axis}`,
      () => dot(ref.mean(x, shape, axis), g),
      x,
      ref.meanBackward(g, shape, axis),
    );
  }
  checkFiniteDiff("sumAll", () => 1.7 * ref.sumAll(x), x, ref.sumAllBackward(1.7, 60));
});

gpuTest(
  "reduce: sum and mean over each axis of rank-3 tensors, forward and backward",
  async (e) => {
    const rng = new Rng(2);
    // the shapes reach every path: serial rows (A ≤ 16), one workgroup per row, long rows in two
    // passes (A > 8192, few rows), column reductions in one pass and in two (A > 256, few groups)
    const shapes = [[3, 37, 19], [4, 5, 9], [2, 700, 5], [5, 3, 20000], [1, 1, 1]];
    for (const shape of shapes) {
      const x = rng.randn(size(shape));
      for (const axis of [0, 1, 2, -1, -3]) {
        for (
          const [name, op, fwd, bwd] of [
            ["sum", sum, ref.sum, ref.sumBackward],
            ["mean", mean, ref.mean, ref.meanBackward],
          ] as const
        ) {
          const A = ref.around(shape, axis)[1];
          const what = `${name} [${shape}] axis ${axis}`;
          const tx = param(e, x, shape);
          const y = op(tx, axis);
          const want = fwd(x, shape, axis);
          assertEquals(y.shape, shape.filter((_, i) => i !== (axis + 3) % 3));
          assertWithin(
            `${what} forward`,
            await readF64(y),
            want,
            sumBound(x, shape, axis, name === "mean" ? 1 / A : 1),
          );
          const g = rng.randn(want.length);
          backward(y, e.tensor(f32(g), y.shape));
          // sum's backward copies g exactly; the mean's multiplies by f32(1/A): 2 roundings
          assertWithin(
            `${what} backward`,
            await readF64(tx.grad!),
            bwd(g, shape, axis),
            name === "mean" ? 2 * U : 0,
          );
          for (const t of [tx, y, tx.grad!]) t.dispose();
        }
      }
    }
  },
);

gpuTest("reduce: sumAll (multi-pass) forward, backward and bit-identical reruns", async (e) => {
  const rng = new Rng(3);
  for (const n of [1, 5, 1000, 300_007]) {
    const x = rng.randn(n);
    const tx = param(e, x, [n]);
    const s = sumAll(tx);
    assertEquals(s.shape, [1]);
    const bound = (n + 2) * U * 1.001 * ref.sumAll(x.map(Math.abs));
    assertWithin(
      `sumAll ${n}`,
      await readF64(s),
      Float64Array.of(ref.sumAll(x)),
      Float64Array.of(bound),
    );
    const again = sumAll(tx);
    assertEquals(
      new Uint32Array((await e.read(again)).buffer),
      new Uint32Array((await e.read(s)).buffer),
    );
    backward(s, e.tensor([0.5], [1]));
    assertWithin(`sumAll ${n} backward`, await readF64(tx.grad!), ref.sumAllBackward(0.5, n), 0);
    for (const t of [tx, s, again, tx.grad!]) t.dispose();
  }
});

gpuTest("reduce: sumRowsInto sets and accumulates column sums, deterministically", async (e) => {
  const rng = new Rng(4);
  // [R, C]: one pass; A > 256 with few column blocks: sliced, two passes; and C = 1
  for (const [R, C] of [[1031, 37], [3001, 130], [7, 3], [513, 1]]) {
    const x = rng.randn(R * C), base = rng.randn(C);
    const tx = e.tensor(f32(x), [R, C]);
    const out = e.tensor(f32(base), [C]);
    const want = ref.sumRows(x, C);
    const bound = ref.sumRows(x.map(Math.abs), C).map((v) => v * (R + 2) * U * 1.001);
    sumRowsInto(out, tx, false);
    const r1 = await e.read(out);
    assertWithin(`sumRowsInto [${R},${C}]`, r1, want, bound);
    sumRowsInto(out, tx, false);
    assertEquals(new Uint32Array((await e.read(out)).buffer), new Uint32Array(r1.buffer));
    // accumulate: out = base + Σ (one more rounding, on |base| + Σ|x|)
    e.upload(out, f32(base));
    sumRowsInto(out, tx, true);
    const accBound = bound.map((v, i) => v + (Math.abs(base[i]) + Math.abs(want[i])) * U * 1.001);
    assertWithin(
      `sumRowsInto accumulate [${R},${C}]`,
      await readF64(out),
      want.map((v, i) => v + base[i]),
      accBound,
    );
    tx.dispose();
    out.dispose();
  }
});

gpuTest("reduce: pool returns to its level", (e) => {
  const live0 = e.stats().live;
  const x = e.tensor(new Float32Array(3 * 20000).fill(1), [3, 20000]);
  const s = sum(x, 1);
  const m = mean(x, 0);
  const a = sumAll(x);
  for (const t of [x, s, m, a]) t.dispose();
  assertEquals(e.stats().live, live0);
});
