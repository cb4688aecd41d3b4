import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { addRmsNorm, rmsNorm } from "../../kernels/rmsnorm.ts";
import * as ref from "../../kernels/rmsnorm_ref.ts";
import { add, clone, mul } from "../../kernels/elementwise.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import { type Tensor, tidy } from "../../tensor/tensor.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import {
  assertClose,
  checkFiniteDiff,
  compare,
  dot,
  type F64,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  param,
  readF64,
  Rng,
  type Tol,
} from "../helpers.ts";

const REPORT = Deno.env.get("RMSNORM_REPORT");

// Forward: r = rsqrt(Σx²/N + eps) with Σx² over ≤ 32 sequential terms per thread then a
// ≤ 8-level tree (all terms ≥ 0, so relative error ≲ 40 ulp ≈ 2.4e-6 worst case), rsqrt
// ≤ 2 ulp, then two products: y = x·r·w has no cancellation, so a purely relative 3e-6
// (measured: ≤ 2.6e-7).
const FWD: Tol = { atol: 0, rtol: 3e-6 };

/**
 * Backward, elementwise: gx = r·u − x·c (c = r³·Σ u x / N) cancels, so the error scales
 * with r·|u| + |x·c|, not |gx|; gw = Σ_rows gy·x·r sums terms of both signs, so its error
 * scales with Σ_rows |gy·x·r|, not |gw|. We allow k = 1e-6 (≈ 16 f32 ulp) of those
 * magnitudes: each product/difference adds a few ulp and the sums (d, gw) run ≤ 64
 * sequential terms per thread followed by fixed trees, whose typical error is a few ulp
 * of the magnitude (measured: ≤ 0.5 of this bound, at 131073 × 5).
 */
function scaleTol(what: string, got: F64, want: F64, mag: F64, k = 1e-6): void {
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= k * mag[i] + 1e-7 * Math.abs(want[i]))) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| ${d.toExponential(3)} > ` +
          `${k}·${mag[i].toExponential(3)})`,
      );
    }
  }
  if (REPORT) {
    let worst = 0;
    for (let i = 0; i < want.length; i++) {
      worst = Math.max(worst, Math.abs(got[i] - want[i]) / (k * mag[i] + 1e-7 * Math.abs(want[i])));
    }
    console.log(what, "error / tolerance", worst.toFixed(4));
  }
}

/** Per-element error magnitudes of the backward (see scaleTol). */
function magnitudes(x: F64, w: F64, gy: F64, eps = 1e-5): { gx: F64; gw: F64 } {
  const n = w.length, rows = x.length / n;
  const { r } = ref.rmsNorm(x, w, eps);
  const gx = new Float64Array(x.length), gw = new Float64Array(n);
  for (let i = 0; i < rows; i++) {
    let d = 0;
    for (let j = 0; j < n; j++) d += Math.abs(gy[i * n + j] * w[j] * x[i * n + j]);
    for (let j = 0; j < n; j++) {
      const k = i * n + j;
      gx[k] = r[i] * Math.abs(gy[k] * w[j]) + Math.abs(x[k]) * r[i] ** 3 * d / n;
      gw[j] += Math.abs(gy[k] * x[k] * r[i]);
    }
  }
  return { gx, gw };
}

Deno.test("rmsnorm ref: gradients match finite differences (rmsNorm and addRmsNorm)", () => {
  const rng = new Rng(1);
  const n = 7, rows = 5;
  const x = rng.randn(rows * n), res = rng.randn(rows * n), w = rng.uniform(n, 0.5, 1.5);
  const dy = rng.randn(rows * n), ds = rng.randn(rows * n);
  const b = ref.rmsNormBackward(x, w, dy);
  const f = () => dot(ref.rmsNorm(x, w).y, dy);
  checkFiniteDiff("rmsnorm gx", f, x, b.gx);
  checkFiniteDiff("rmsnorm gw", f, w, b.gw);
  for (const r of [res, null]) {
    for (const [gs, gy] of [[ds, dy], [null, dy], [ds, null]]) {
      const g = () => {
        const o = ref.addRmsNorm(x, r, w);
        return (gs ? dot(o.s, gs) : 0) + (gy ? dot(o.y, gy) : 0);
      };
      const a = ref.addRmsNormBackward(x, r, w, gs, gy);
      const tag = `addRmsNorm res=${r !== null} gs=${gs !== null} gy=${gy !== null}`;
      checkFiniteDiff(`${tag} gx`, g, x, a.gx);
      if (r) checkFiniteDiff(`${tag} gres`, g, r, a.gx);
      checkFiniteDiff(`${tag} gw`, g, w, a.gw);
    }
  }
});

/** rmsNorm forward and backward on [rows, n] against the reference; w is a leaf param. */
async function checkNorm(e: Engine, rng: Rng, rows: number, n: number): Promise<void> {
  const x = rng.randn(rows * n, 2), w = rng.uniform(n, 0.5, 1.5), dy = rng.randn(rows * n);
  const tx = param(e, x, [rows, n]), tw = param(e, w, [n]);
  // a non-zero gradient already in w.grad: the kernel must add to it (ACCUMULATED path)
  const g0 = rng.randn(n);
  tw.grad = e.tensor(Float32Array.from(g0), [n]);
  const y = rmsNorm(tx, tw);
  const tag = `rmsNorm [${rows}, ${n}]`;
  const want = ref.rmsNorm(x, w);
  const got = await readF64(y);
  assertClose(`${tag} y`, got, want.y, FWD);
  if (REPORT) console.log(tag, compare(got, want.y));
  const tdy = e.tensor(Float32Array.from(dy), [rows, n]);
  backward(y, tdy);
  const b = ref.rmsNormBackward(x, w, dy);
  const m = magnitudes(x, w, dy);
  scaleTol(`${tag} gx`, await readF64(tx.grad!), b.gx, m.gx);
  scaleTol(
    `${tag} gw`,
    await readF64(tw.grad!),
    b.gw.map((v, i) => v + g0[i]),
    m.gw.map((v, i) => v + Math.abs(g0[i])),
  );
  for (const t of [tx, tw, tx.grad!, tw.grad!, y, tdy]) t.dispose();
}

gpuTest("rmsNorm: widths 1 / 3 / 64 / 257 / 1024 / 1025 / 4096 over 37 rows", async (e) => {
  const rng = new Rng(2);
  // 1, 3, 257, 1025: scalar rows (257, 1025 two and four values per thread); 64, 1024,
  // 4096: vec4 (4096 = a whole workgroup per row, four vec4 per thread)
  for (const n of [1, 3, 64, 257, 1024, 1025, 4096]) await checkNorm(e, rng, 37, n);
});

gpuTest(
  "rmsNorm: many rows (blocked gw: several rows per thread, partial last block)",
  async (e) => {
    const rng = new Rng(3);
    // 1201 × 257: one row per workgroup, 2 rows per block; 131073 × 5: 64 rows per workgroup
    // (segment tree for gw), 3 rows per segment, the last block partly empty
    await checkNorm(e, rng, 1201, 257);
    await checkNorm(e, rng, 131073, 5);
  },
);

gpuTest("rmsNorm: gw for a non-leaf weight; no gx when x needs none; deterministic", async (e) => {
  const rng = new Rng(4);
  const rows = 301, n = 68;
  const x = rng.randn(rows * n), w = rng.uniform(n, 0.5, 1.5), dy = rng.randn(rows * n);
  const tx = e.tensor(Float32Array.from(x), [rows, n]); // no grad
  const tdy = e.tensor(Float32Array.from(dy), [rows, n]);
  const b = ref.rmsNormBackward(x, w, dy);
  const m = magnitudes(x, w, dy);
  const grads: Float32Array[] = [];
  for (let rep = 0; rep < 2; rep++) {
    const tw = param(e, w, [n]);
    const wc = clone(tw); // not a leaf: rmsNorm returns gw, clone's backward accumulates it
    const y = rmsNorm(tx, wc);
    backward(y, tdy);
    const g = await e.readF32(tw.grad!);
    scaleTol("gw via clone", Float64Array.from(g), b.gw, m.gw);
    grads.push(g);
    for (const t of [tw, tw.grad!, wc, y]) t.dispose();
  }
  assertEquals(grads[0], grads[1]);
  tx.dispose();
  tdy.dispose();
});

/**
 * addRmsNorm with grads at y, at s, or both (via root = a⊙s + b⊙y, a and b constants),
 * residual given or null.
 */
gpuTest("addRmsNorm: grads at one or both outputs, residual given or null", async (e) => {
  const rng = new Rng(5);
  const rows = 37, n = 257;
  const x = rng.randn(rows * n), res = rng.randn(rows * n), w = rng.uniform(n, 0.5, 1.5);
  const a = rng.randn(rows * n), bb = rng.randn(rows * n), dy = rng.randn(rows * n);
  const ta = e.tensor(Float32Array.from(a), [rows, n]);
  const tb = e.tensor(Float32Array.from(bb), [rows, n]);
  const tdy = e.tensor(Float32Array.from(dy), [rows, n]);
  for (const withRes of [true, false]) {
    for (const mode of ["y", "s", "both"] as const) {
      const tag = `addRmsNorm res=${withRes} grads at ${mode}`;
      const tx = param(e, x, [rows, n]), tw = param(e, w, [n]);
      const tr = withRes ? param(e, res, [rows, n]) : null;
      const [s, y] = addRmsNorm(tx, tr, tw);
      const want = ref.addRmsNorm(x, withRes ? res : null, w);
      assertClose(`${tag} s`, await readF64(s), want.s, { atol: 0, rtol: 6e-8 }); // one f32 add
      assertClose(`${tag} y`, await readF64(y), want.y, FWD);
      if (!withRes) assertEquals(s.buffer, tx.buffer); // s is x itself (a view)
      const gs = mode === "y" ? null : mode === "s" ? dy : a.map((v, i) => v * dy[i]);
      const gy = mode === "s" ? null : mode === "y" ? dy : bb.map((v, i) => v * dy[i]);
      let root: Tensor;
      if (mode === "y") root = y;
      else if (mode === "s") root = s;
      else root = tidy(() => add(mul(s, ta), mul(y, tb)));
      backward(root, tdy);
      const r = ref.addRmsNormBackward(x, withRes ? res : null, w, gs, gy);
      const m = gy
        ? magnitudes(want.s, w, gy)
        : { gx: new Float64Array(x.length), gw: new Float64Array(n) };
      const mgx = m.gx.map((v, i) => v + Math.abs(gs?.[i] ?? 0));
      scaleTol(`${tag} gx`, await readF64(tx.grad!), r.gx, mgx);
      if (tr) scaleTol(`${tag} gres`, await readF64(tr.grad!), r.gx, mgx);
      if (gy) scaleTol(`${tag} gw`, await readF64(tw.grad!), r.gw, m.gw);
      // no gradient reached y: w's gradient (the tape makes a zeroed one for a leaf) stays 0
      else assertEquals((await e.read(tw.grad!)).every((v) => v === 0), true);
      for (const t of [tx, tw, tr, tx.grad, tw.grad, tr?.grad, s, y, root]) t?.dispose();
    }
  }
  for (const t of [ta, tb, tdy]) t.dispose();
});

fixtureTest("addRmsNorm: the fixture model's norms (mixer_in, mlp_in, ln_f_out)", async (e) => {
  const fwd = await readSafetensors(`${FIXTURES}/model_forward.safetensors`);
  const params = await readSafetensors(`${FIXTURES}/model_params_init.safetensors`);
  const act = (name: string) => tensorData(fwd, `act.${name}`) as Float32Array;
  const shape = fwd.tensors.get("act.embeddings")!.shape;
  const up = (a: Float32Array) => e.tensor(a, shape);
  const wt = (name: string) => {
    const d = tensorData(params, name) as Float32Array;
    return e.tensor(d, [d.length]);
  };
  const check = async (name: string, t: Tensor) => {
    assertClose(name, await readF64(t), Float64Array.from(act(name)), fixtureTol(`act.${name}`));
  };
  const owned: Tensor[] = [];
  let h = up(act("embeddings"));
  let residual: Tensor | null = null;
  owned.push(h);
  for (let i = 0; fwd.tensors.has(`act.layers.${i}.mixer_in`); i++) {
    const pre = `transformer.layers.${i}`;
    const w1 = wt(`${pre}.norm1.weight`), w2 = wt(`${pre}.norm2.weight`);
    const [r, x] = addRmsNorm(h, residual, w1);
    await check(`layers.${i}.mixer_in`, x);
    const a = up(act(`layers.${i}.mixer_out`));
    const [r2, x2] = addRmsNorm(a, r, w2);
    await check(`layers.${i}.mlp_in`, x2);
    h = up(act(`layers.${i}.mlp_out`));
    residual = r2;
    owned.push(w1, w2, r, x, a, r2, x2, h);
  }
  const wf = wt("transformer.ln_f.weight");
  const [, y] = addRmsNorm(h, residual, wf);
  await check("ln_f_out", y);
  owned.push(wf, y);
  for (const t of owned) t.dispose();
});
