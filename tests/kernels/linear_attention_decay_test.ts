/**
 * The fixed decay (kernels/linear_attention/decay*.ts): the float64 forms
 * agree (definition, chunked, recurrent), reduce to the undecayed reference
 * when r = 1, and the definition's analytic gradient matches finite
 * differences; the WGSL quadratic and chunked views (forward + backward) and
 * the recurrent prefill + steps match float64 at awkward sizes and agree with
 * each other; the cumsum view refuses the decay in one line.
 */
import { throws } from "node:assert/strict";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  gpuTest,
  param,
  readF64,
  Rng,
  type Tol,
} from "../helpers.ts";
import * as ref from "../../kernels/linear_attention/reference.ts";
import {
  decayChunked,
  type DecayOptions,
  decayRecurrent,
  decayReference,
  decayReferenceBackward,
  decayRowScale,
  headScaleBackward,
  headScaleReference,
} from "../../kernels/linear_attention/decay_reference.ts";
import {
  type DecayCursor,
  decayPrefill,
  decayStep,
  headScale,
  linearAttention,
  linearAttentionState,
} from "../../kernels/linear_attention/mod.ts";
import { backward } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import { BasedError } from "../../errors.ts";

// float64 forms of the same quantity, different summation orders: agreement to ~1e-12
const TOL_F64: Tol = { atol: 1e-12, rtol: 1e-10 };
// GPU (f32) vs float64 on N(0, 1) inputs: as the undecayed views (linear_attention_test.ts): ratios
// of f32 sums of ≤ L terms A_ij ≤ ~20, rounding ~√L·2⁻²⁴ relative, worst L·2⁻²⁴ ≈ 3e-6 at L = 45;
// the decay weights and σ are tables rounded once to f32 (2⁻²⁴ relative). Same bounds as there.
const TOL_GPU: Tol = { atol: 2e-5, rtol: 1e-4, relL2: 4e-6 };

function randomCase(seed: number, s: ref.LaShape) {
  const rng = new Rng(seed);
  const n = s.B * s.L * s.H;
  return {
    q: rng.randn(n * s.F),
    k: rng.randn(n * s.F),
    v: rng.randn(n * s.D),
    dy: rng.randn(n * s.D),
  };
}

const OPTS: DecayOptions[] = [{ c0: -3, denom: false }, { c0: -2, denom: true }];

Deno.test("decay ref: definition = chunked form = recurrent form (float64)", () => {
  const s = { B: 2, L: 13, H: 3, F: 4, D: 3 };
  const c = randomCase(1, s);
  for (const o of OPTS) {
    const a = decayReference(c.q, c.k, c.v, s, o);
    assertClose(
      `chunked ${JSON.stringify(o)}`,
      decayChunked(c.q, c.k, c.v, s, o, 1e-12, 5).y,
      a.y,
      TOL_F64,
    );
    assertClose(
      `den ${JSON.stringify(o)}`,
      decayChunked(c.q, c.k, c.v, s, o, 1e-12, 4).den,
      a.den,
      TOL_F64,
    );
    assertClose(
      `recurrent ${JSON.stringify(o)}`,
      decayRecurrent(c.q, c.k, c.v, s, o).y,
      a.y,
      TOL_F64,
    );
  }
});

Deno.test("decay ref: r = 1 (c0 = -80) is the undecayed reference; σ is 1/√(row sum)", () => {
  const s = { B: 1, L: 9, H: 2, F: 4, D: 3 };
  const c = randomCase(2, s);
  const o = { c0: -80, denom: false };
  assertClose(
    "r=1",
    decayReference(c.q, c.k, c.v, s, o).y,
    ref.reference(c.q, c.k, c.v, s).y,
    TOL_F64,
  );
  for (const h of [0, 1, 4]) {
    for (const i of [0, 1, 7, 300]) {
      const r = 1 - 2 ** (-3 - h);
      let sum = 0;
      for (let n = 0; n <= i; n++) sum += r ** n;
      const got = decayRowScale({ c0: -3, denom: true }, h, i);
      if (Math.abs(got - 1 / Math.sqrt(sum)) > 1e-13) throw new Error(`σ h${h} i${i}: ${got}`);
    }
  }
});

Deno.test("decay ref: analytic gradient matches finite differences", () => {
  const s = { B: 1, L: 7, H: 2, F: 4, D: 3 };
  const c = randomCase(3, s);
  for (const o of OPTS) {
    const g = decayReferenceBackward(c.q, c.k, c.v, c.dy, s, o);
    const f = () => dot(decayReference(c.q, c.k, c.v, s, o).y, c.dy);
    checkFiniteDiff(`dq ${JSON.stringify(o)}`, f, c.q, g.dq);
    checkFiniteDiff(`dk ${JSON.stringify(o)}`, f, c.k, g.dk);
    checkFiniteDiff(`dv ${JSON.stringify(o)}`, f, c.v, g.dv);
  }
});

for (const view of ["quadratic", "chunked"] as const) {
  gpuTest(`decay [${view}]: WGSL forward and backward match float64 (awkward sizes)`, async (e) => {
    for (
      const [s, o] of [
        [{ B: 2, L: 45, H: 3, F: 4, D: 5 }, OPTS[0]],
        [{ B: 1, L: 150, H: 2, F: 16, D: 20 }, OPTS[1]], // chunks of 64, 64, 22
        [{ B: 1, L: 1, H: 5, F: 8, D: 7 }, { c0: -1, denom: true }],
      ] as const
    ) {
      const c = randomCase(4, s);
      const { B, L, H, F, D } = s;
      const q = param(e, c.q, [B, L, H, F]), k = param(e, c.k, [B, L, H, F]);
      const v = param(e, c.v, [B, L, H, D]);
      const dy = e.tensor(Float32Array.from(c.dy), [B, L, H, D]);
      const y = tidy(() => linearAttention(q, k, v, { view, featureDim: F, decay: o }));
      const what = `${JSON.stringify(s)} ${JSON.stringify(o)}`;
      // at L = 1, dq and dk are exactly 0 (y = σ v): f32 cancellation noise, no relative L2
      const tg: Tol = L === 1 ? { atol: TOL_GPU.atol, rtol: TOL_GPU.rtol } : TOL_GPU;
      assertClose(`y ${what}`, await readF64(y), decayReference(c.q, c.k, c.v, s, o).y, TOL_GPU);
      backward(y, dy);
      const g = decayReferenceBackward(c.q, c.k, c.v, c.dy, s, o);
      assertClose(`dq ${what}`, await readF64(q.grad!), g.dq, tg);
      assertClose(`dk ${what}`, await readF64(k.grad!), g.dk, tg);
      assertClose(`dv ${what}`, await readF64(v.grad!), g.dv, TOL_GPU);
      for (const t of [q.grad!, k.grad!, v.grad!, q, k, v, dy, y]) t.dispose();
    }
  });
}

gpuTest("decay: the quadratic and chunked views agree (L = 200)", async (e) => {
  const s = { B: 1, L: 200, H: 4, F: 16, D: 16 };
  const c = randomCase(6, s);
  const o = { c0: -4, denom: true };
  const run = async (view: "quadratic" | "chunked") => {
    const q = e.tensor(Float32Array.from(c.q), [1, 200, 4, 16]);
    const k = e.tensor(Float32Array.from(c.k), [1, 200, 4, 16]);
    const v = e.tensor(Float32Array.from(c.v), [1, 200, 4, 16]);
    const y = linearAttention(q, k, v, { view, decay: o });
    const out = await readF64(y);
    for (const t of [q, k, v, y]) t.dispose();
    return out;
  };
  // each within TOL_GPU of float64, so within twice that of each other
  assertClose("chunked vs quadratic", await run("chunked"), await run("quadratic"), {
    atol: 4e-5,
    rtol: 2e-4,
    relL2: 8e-6,
  });
});

gpuTest("decay: recurrent prefill + steps match the float64 recurrent form", async (e) => {
  const s = { B: 2, L: 11, H: 3, F: 8, D: 6 };
  const P = 4;
  for (const o of OPTS) {
    const c = randomCase(5, s);
    const want = decayRecurrent(c.q, c.k, c.v, s, o);
    const { B, L, H, F, D } = s;
    const slice = (x: Float64Array, X: number, t0: number, n: number) => {
      const out = new Float32Array(B * n * H * X);
      for (let b = 0; b < B; b++) {
        out.set(x.subarray((b * L + t0) * H * X, (b * L + t0 + n) * H * X), b * n * H * X);
      }
      return out;
    };
    const st = linearAttentionState(B, H, F, D);
    const cur: DecayCursor = { o, n: L + 1, pos: 0 };
    const kp = e.tensor(slice(c.k, F, 0, P), [B, P, H, F]);
    const vp = e.tensor(slice(c.v, D, 0, P), [B, P, H, D]);
    decayPrefill(st, kp, vp, cur);
    for (let t = P; t < L; t++) {
      const [qt, kt] = [c.q, c.k].map((x) => e.tensor(slice(x, F, t, 1), [B, 1, H, F]));
      const vt = e.tensor(slice(c.v, D, t, 1), [B, 1, H, D]);
      const y = await readF64(decayStep(st, qt, kt, vt, 1e-12, cur));
      const yw = new Float64Array(B * H * D);
      for (let b = 0; b < B; b++) {
        yw.set(want.y.subarray((b * L + t) * H * D, (b * L + t + 1) * H * D), b * H * D);
      }
      assertClose(`step ${t} ${JSON.stringify(o)}`, y, yw, TOL_GPU);
    }
    assertClose(`final kv ${JSON.stringify(o)}`, await readF64(st.kv), want.kv, {
      atol: 1e-4,
      rtol: 1e-4,
    });
    st.kv.dispose();
    st.k.dispose();
  }
});

gpuTest("decay: the views without it refuse in one line", (e) => {
  const q = e.tensor(new Float32Array(2 * 4), [1, 2, 1, 4]);
  const v = e.tensor(new Float32Array(2 * 3), [1, 2, 1, 3]);
  for (const view of ["cumsum"] as const) {
    throws(
      () => linearAttention(q, q, v, { view, decay: OPTS[0] }),
      (err: Error) => err instanceof BasedError && /does not implement the decay/.test(err.message),
    );
  }
});

gpuTest("decay_proj: the per-row scale, forward and backward, against float64", async (e) => {
  const rng = new Rng(9);
  const [B, L, H, D] = [2, 7, 3, 5];
  const y = rng.randn(B * L * H * D), p = rng.randn(B * L * H), g = rng.randn(B * L * H * D);
  const ref = headScaleBackward(y, p, g, D);
  const f = () => dot(headScaleReference(y, p, D), g);
  checkFiniteDiff("gy", f, y, ref.gy);
  checkFiniteDiff("gp", f, p, ref.gp);
  const yt = param(e, y, [B, L, H, D]), pt = param(e, p, [B, L, H]);
  const gt = e.tensor(Float32Array.from(g), [B, L, H, D]);
  const out = tidy(() => headScale(yt, pt));
  // one f32 product per element; gp sums D = 5 products: within 2e-6 relative of O(1) values
  const tol: Tol = { atol: 1e-6, rtol: 2e-6 };
  assertClose("y'", await readF64(out), headScaleReference(y, p, D), tol);
  backward(out, gt);
  assertClose("gy", await readF64(yt.grad!), ref.gy, tol);
  assertClose("gp", await readF64(pt.grad!), ref.gp, tol);
  for (const t of [yt, pt, gt, out, yt.grad!, pt.grad!]) t.dispose();
});
