import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { crossEntropy, crossEntropyRows } from "../../kernels/cross_entropy.ts";
import * as ref from "../../kernels/cross_entropy_ref.ts";
import { clone } from "../../kernels/elementwise.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import { checkFiniteDiff, type F64, gpuTest, param, readF64, Rng } from "../helpers.ts";

const REPORT = Deno.env.get("CE_REPORT");
/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * Error budget of the row logsumexp (absolute, = relative error of s = Σ exp(z − max)):
 * each thread runs an online (max, s) over ⌈V/256⌉ elements (scalar rows) or ⌈V/1024⌉
 * vec4 steps, then an 8-level tree; every step adds one rounding of the add, ≤ 3 ulp for
 * exp and, when the max moves, ≤ 3 ulp for the rescale. Those errors have random signs,
 * so they grow like the square root of the chain length, not linearly (the worst-case
 * linear bound, ~7·197·u ≈ 8e-5 at V = 50264, is never approached): we allow
 * 8·√(chain)·u + 8 ulp of |lse| for the final log, add and rounding. Measured (CE_REPORT=1):
 * row losses ≤ 0.12 of this, the mean ≤ 0.03, at V = 37 … 50264.
 */
function lseTol(V: number, lse: number): number {
  const chain = Math.ceil(V / 256) + 24;
  return 8 * Math.sqrt(chain) * U + 8 * U * Math.abs(lse);
}

interface Case {
  T: number;
  V: number;
  std: number;
  shift?: number;
  /** rows whose label is −100 */
  ignore?: number[];
}

function makeCase(rng: Rng, c: Case): { z: F64; labels: Int32Array } {
  const z = rng.randn(c.T * c.V, c.std).map((v) => v + (c.shift ?? 0));
  // f32-exact after the shift too
  const zf = Float64Array.from(Float32Array.from(z));
  const labels = Int32Array.from({ length: c.T }, () => rng.int(c.V));
  labels[0] = c.V - 1; // the last column (vec4 tail lane / scalar end)
  for (const t of c.ignore ?? []) labels[t] = ref.IGNORE_INDEX;
  return { z: zf, labels };
}

function report(what: string, worst: number) {
  if (REPORT) console.log(what, "error / tolerance", worst.toFixed(4));
}

/** Row losses: |got − want| ≤ lseTol + 4 ulp of |z_y| (the subtraction and z_y). */
function checkRows(what: string, got: F64, want: ReturnType<typeof ref.crossEntropy>, c: {
  z: F64;
  labels: Int32Array;
  V: number;
}) {
  let worst = 0;
  for (let t = 0; t < got.length; t++) {
    const y = c.labels[t];
    const zy = y === ref.IGNORE_INDEX ? 0 : Math.abs(c.z[t * c.V + y]);
    const tol = y === ref.IGNORE_INDEX ? 0 : lseTol(c.V, want.lse[t]) + 4 * U * zy;
    const d = Math.abs(got[t] - want.rowLoss[t]);
    if (!(d <= tol)) {
      throw new Error(`${what}: row ${t} got ${got[t]} expected ${want.rowLoss[t]} (|d| ${d})`);
    }
    worst = Math.max(worst, tol ? d / tol : 0);
  }
  report(what, worst);
}

/**
 * Gradient gz = sc·(p − onehot), p = exp(z − lse): p's relative error is lse's absolute
 * error (lseTol) plus exp's own (WGSL allows 3 + 2|x| ulp) plus the rounding of the
 * argument x = z − lse (≤ |x|·u absolute, the same relative error in p): (3 + 4|x|)·u;
 * the onehot subtraction and the scaling add ≤ 2 ulp of the result. Bound per element:
 * |sc|·p·(lseTol + (3 + 4|x|)·u) + 2u·|gz|. Measured: ≤ 0.65 of it (the largest p, V = 37).
 */
function checkGrad(
  what: string,
  got: ArrayLike<number>,
  c: { z: F64; labels: Int32Array; V: number },
  sc: number,
) {
  const want = ref.crossEntropyGrad(c.z, c.labels, c.V, sc);
  const { lse } = ref.crossEntropy(c.z, c.labels, c.V);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const t = Math.floor(i / c.V);
    let tol = 0;
    if (c.labels[t] !== ref.IGNORE_INDEX) {
      const p = Math.exp(c.z[i] - lse[t]);
      const e = lseTol(c.V, lse[t]) + (3 + 4 * Math.abs(c.z[i] - lse[t])) * U;
      tol = Math.abs(sc) * (p * e) + 2 * U * Math.abs(want[i]);
    }
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= tol)) {
      throw new Error(
        `${what}: element ${i} (row ${t}) got ${got[i]} expected ${want[i]} (|d| ${d} > ${tol})`,
      );
    }
    worst = Math.max(worst, tol ? d / tol : 0);
  }
  report(what, worst);
}

Deno.test("cross-entropy ref: gradient of the mean loss matches finite differences", () => {
  const rng = new Rng(1);
  const T = 4, V = 9;
  const z = rng.randn(T * V, 2);
  const labels = Int32Array.from([3, ref.IGNORE_INDEX, 8, 0]);
  const count = ref.crossEntropy(z, labels, V).count;
  assertEquals(count, 3);
  checkFiniteDiff(
    "cross-entropy dz",
    () => ref.crossEntropy(z, labels, V).loss,
    z,
    ref.crossEntropyGrad(z, labels, V, 1 / count),
    { samples: T * V },
  );
});

const CASES: Case[] = [
  { T: 33, V: 37, std: 2, ignore: [5, 32] }, // scalar rows, shorter than a workgroup
  { T: 5, V: 50264, std: 1, ignore: [3] }, // the real (padded) vocabulary: vec4 rows
  { T: 3, V: 50257, std: 1.5 }, // an unpadded vocabulary: long scalar rows
  { T: 33, V: 40, std: 3, shift: 900 }, // vec4, large logits: the max must be subtracted
];

async function lossCase(e: Engine, rng: Rng, c: Case) {
  const tag = `T=${c.T} V=${c.V}`;
  const data = makeCase(rng, c);
  const want = ref.crossEntropy(data.z, data.labels, c.V);
  const z = param(e, data.z, [c.T, c.V]);
  const labels = e.tensor(data.labels, [c.T], "i32");
  // through a clone: the op's gradient is returned, not accumulated
  const zc = clone(z);
  const loss = crossEntropy(zc, labels);
  assertEquals(loss.shape, [1]);
  const got = (await readF64(loss))[0];
  // the mean of the row losses (≤ 64 terms per thread, then a tree) divided by the count
  let tol = 0;
  for (let t = 0; t < c.T; t++) {
    if (data.labels[t] === ref.IGNORE_INDEX) continue;
    tol += lseTol(c.V, want.lse[t]) + 4 * U * Math.abs(data.z[t * c.V + data.labels[t]]);
  }
  tol = tol / want.count + (c.T + 2) * U * Math.abs(want.loss);
  if (!(Math.abs(got - want.loss) <= tol)) {
    throw new Error(`${tag} loss: got ${got} expected ${want.loss} (tol ${tol})`);
  }
  report(`${tag} loss`, Math.abs(got - want.loss) / tol);
  const g = 0.75;
  backward(loss, e.tensor(Float32Array.of(g), [1]));
  checkGrad(`${tag} dz`, await e.read(z.grad!), { ...data, V: c.V }, g / want.count);
  for (const t of [z, z.grad!, labels, zc, loss]) t.dispose();
}

gpuTest("crossEntropy: loss and gradient vs reference (V = 37, 40, 50257, 50264)", async (e) => {
  const rng = new Rng(2);
  for (const c of CASES) await lossCase(e, rng, c);
});

gpuTest("crossEntropyRows: per-row loss, and in-place gradient with gradScale", async (e) => {
  const rng = new Rng(3);
  for (const c of CASES) {
    const tag = `rows T=${c.T} V=${c.V}`;
    const data = makeCase(rng, c);
    const want = ref.crossEntropy(data.z, data.labels, c.V);
    const z = e.tensor(Float32Array.from(data.z), [c.T, c.V]);
    const labels = e.tensor(data.labels, [c.T], "i32");
    const rowLoss = e.empty([c.T]);
    crossEntropyRows(z, labels, rowLoss);
    checkRows(`${tag} loss`, await readF64(rowLoss), want, { ...data, V: c.V });
    // without gradScale the logits are left alone
    assertEquals(await e.read(z), Float32Array.from(data.z));
    const sc = -1.5 / c.T;
    crossEntropyRows(z, labels, rowLoss, { gradScale: sc });
    checkRows(`${tag} loss (grad pass)`, await readF64(rowLoss), want, { ...data, V: c.V });
    checkGrad(`${tag} in-place grad`, await e.read(z), { ...data, V: c.V }, sc);
    for (const t of [z, labels, rowLoss]) t.dispose();
  }
});

gpuTest(
  "crossEntropy: uniform logits give exactly log V (every column counted once)",
  async (e) => {
    // exp(0) = 1 exactly and s = V is an exact f32 integer: lse = log(V) to a few ulp, so a
    // skipped or doubly counted column (an error of 1/V ≥ 2e-5) cannot hide in the tolerance
    for (const [T, V] of [[3, 50264], [3, 50257], [2, 37], [2, 1]]) {
      const z = e.tensor(new Float32Array(T * V), [T, V]);
      const labels = e.tensor(Int32Array.from({ length: T }, (_, t) => (t * 7) % V), [T], "i32");
      const rowLoss = e.empty([T]);
      crossEntropyRows(z, labels, rowLoss, { gradScale: 1 });
      for (const v of await e.read(rowLoss)) {
        if (!(Math.abs(v - Math.log(V)) <= 4 * U * Math.max(1, Math.log(V)))) {
          throw new Error(`V=${V}: loss ${v}, expected log V = ${Math.log(V)}`);
        }
      }
      const gz = await e.read(z);
      // p = exp(0 - lse) with |lse| = log V: WGSL's exp is accurate to 3 + 2|x| ulp (the H200's
      // is ~8 ulp off here), plus lse's own error and one rounding for the label's subtraction
      const pTol = (8 + 2 * Math.log(V)) * U / V;
      for (let i = 0; i < gz.length; i++) {
        const t = Math.floor(i / V);
        const want = 1 / V - (i % V === (t * 7) % V ? 1 : 0);
        if (!(Math.abs(gz[i] - want) <= pTol + U * Math.abs(want))) {
          throw new Error(`V=${V}: grad[${i}] = ${gz[i]}, expected ${want}`);
        }
      }
      for (const t of [z, labels, rowLoss]) t.dispose();
    }
  },
);

gpuTest("crossEntropy: bit-identical across runs", async (e) => {
  const rng = new Rng(4);
  const data = makeCase(rng, { T: 9, V: 50264, std: 2, ignore: [4] });
  const labels = e.tensor(data.labels, [9], "i32");
  const runs: Uint32Array[][] = [];
  for (let r = 0; r < 2; r++) {
    const z = param(e, data.z, [9, 50264]);
    const loss = crossEntropy(z, labels);
    const l = new Uint32Array((await e.read(loss)).buffer);
    backward(loss);
    runs.push([l, new Uint32Array((await e.read(z.grad!)).buffer)]);
    for (const t of [z, z.grad!, loss]) t.dispose();
  }
  assertEquals(runs[0], runs[1]);
  labels.dispose();
});

gpuTest("crossEntropy: ignored labels (all ignored: NaN loss, zero gradient)", async (e) => {
  const T = 4, V = 12;
  const rng = new Rng(5);
  const zData = rng.randn(T * V);
  // all rows ignored: 0/0 as in PyTorch
  const z = param(e, zData, [T, V]);
  const labels = e.tensor(new Int32Array(T).fill(-100), [T], "i32");
  const loss = crossEntropy(z, labels);
  assertEquals(Number.isNaN((await e.read(loss))[0]), true);
  backward(loss);
  assertEquals([...(await e.read(z.grad!))].every((v) => v === 0), true);
  // a label outside [0, V) (not −100) poisons its row loss with NaN instead of reading out of bounds
  const bad = e.tensor(Int32Array.from([1, V, -100, -5]), [T], "i32");
  const rowLoss = e.empty([T]);
  crossEntropyRows(z, bad, rowLoss);
  const rl = await e.read(rowLoss);
  assertEquals([Number.isNaN(rl[1]), rl[2], Number.isNaN(rl[3])], [true, 0, true]);
  assertEquals(Number.isFinite(rl[0]), true);
  for (const t of [z, z.grad!, labels, loss, bad, rowLoss]) t.dispose();
});
