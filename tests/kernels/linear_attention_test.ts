import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  linearAttention,
  linearAttentionPrefill,
  linearAttentionState,
  linearAttentionStep,
  type LinearAttentionView,
  resolveView,
  taylorFeatureMap,
} from "../../kernels/linear_attention/mod.ts";
import * as ref from "../../kernels/linear_attention/reference.ts";
import * as refViews from "../../kernels/linear_attention/reference_views.ts";
import type { Engine } from "../../tensor/engine.ts";
import { BasedError } from "../../errors.ts";
import { readSafetensors, type SafeFile, tensorData } from "../../tensor/safetensors.ts";
import { backward, noGrad } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  type F64,
  fixtureCpuTest,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  param,
  readF64,
  Rng,
  type Tol,
  withCompactWorkgroup,
} from "../helpers.ts";

const VIEWS: LinearAttentionView[] = ["quadratic", "chunked", "cumsum"];

// Random-input tolerance of a GPU view against the float64 reference (values and gradients are
// O(1) here: q, k, v, dy ~ N(0, 1)). Every output is a ratio of f32 sums of up to L positive
// terms A_ij ≤ ~20 (numerators also signed v terms) accumulated in a view-specific order (tiles,
// chunk states, per-token scans): the rounding is a random walk of ~√L·2⁻²⁴ relative steps, worst
// case L·2⁻²⁴ ≈ 1.5e-5 at L = 257. Observed: ≤ 4.3e-6 max abs, ≤ 5e-7 rel. L2 (cumsum, the 273-wide
// scan, is the loosest). 2e-5 absolute + 1e-4 relative per element and 4e-6 rel. L2 keep a
// 4-5x margin. (At L = 1 dq and dk are exactly 0 in exact arithmetic — y = v — and f32 leaves
// ~3e-6 of cancellation noise, inside atol.)
const TOL_REF: Tol = { atol: 2e-5, rtol: 1e-4, relL2: 4e-6 };
// Two views: each is within TOL_REF of the reference, so their difference within twice that.
const TOL_VIEWS: Tol = { atol: 4e-5, rtol: 2e-4, relL2: 8e-6 };

let laFile: SafeFile | null = null;
async function fixtures(): Promise<SafeFile> {
  return laFile ??= await readSafetensors(`${FIXTURES}/linear_attention.safetensors`);
}
const fx = (f: SafeFile, name: string) => Float64Array.from(tensorData(f, name));
const shapeOf = (f: SafeFile, name: string) => f.tensors.get(name)!.shape;

interface Case {
  s: ref.LaShape;
  q: F64;
  k: F64;
  v: F64;
  dy: F64;
}

function randomCase(seed: number, B: number, L: number, H: number, D: number, F = 16): Case {
  const rng = new Rng(seed);
  const s = { B, L, H, F, D };
  const n = B * L * H;
  return { s, q: rng.randn(n * F), k: rng.randn(n * F), v: rng.randn(n * D), dy: rng.randn(n * D) };
}

/** GPU forward + backward of one view: y, dq, dk, dv as f64 (token-major). */
async function runView(e: Engine, c: Case, view: LinearAttentionView) {
  const { B, L, H, F, D } = c.s;
  const q = param(e, c.q, [B, L, H, F]), k = param(e, c.k, [B, L, H, F]);
  const v = param(e, c.v, [B, L, H, D]);
  const dy = e.tensor(Float32Array.from(c.dy), [B, L, H, D]);
  const y = tidy(() => linearAttention(q, k, v, { view, featureDim: F }));
  const yv = await readF64(y);
  backward(y, dy);
  const out = {
    y: yv,
    dq: await readF64(q.grad!),
    dk: await readF64(k.grad!),
    dv: await readF64(v.grad!),
  };
  for (const t of [q.grad!, k.grad!, v.grad!, q, k, v, dy, y]) t.dispose();
  return out;
}

// ------------------------------------------------------------------ CPU references

Deno.test("linear attention ref: every view's backward matches finite differences", () => {
  // L = 37 with chunk 4 (partial last chunk), F = 16, D = 8, (the reference gradient's own check)
  const c = randomCase(1, 1, 37, 2, 8);
  const { q, k, v, dy, s } = c;
  const views = [
    ["reference", ref.reference, ref.referenceBackward],
    ["quadratic", refViews.quadraticForward, refViews.quadraticBackward],
    ["cumsum", refViews.cumsumForward, refViews.cumsumBackward],
    [
      "chunked (fused_chunk)",
      (a: F64, b: F64, x: F64, sh: ref.LaShape) => refViews.chunkedForward(a, b, x, sh, 1e-12, 4),
      (a: F64, b: F64, x: F64, g: F64, sh: ref.LaShape) =>
        refViews.chunkedBackward(a, b, x, g, sh, 1e-12, 4),
    ],
  ] as const;
  const base = ref.referenceBackward(q, k, v, dy, s);
  const y0 = ref.reference(q, k, v, s);
  for (const [name, fwd, bwd] of views) {
    const g = bwd(q, k, v, dy, s);
    const loss = () => dot(fwd(q, k, v, s).y, dy);
    // float64 central differences (eps 1e-6): truncation + cancellation ~1e-9 of values O(1)
    checkFiniteDiff(`${name} dq`, loss, q, g.dq, { tol: 1e-7 });
    checkFiniteDiff(`${name} dk`, loss, k, g.dk, { tol: 1e-7 });
    checkFiniteDiff(`${name} dv`, loss, v, g.dv, { tol: 1e-7 });
    // the views are the same function: they agree to float64 rounding (spec: ≤ 5e-14)
    const exact = { atol: 1e-12, rtol: 1e-12 };
    const r = fwd(q, k, v, s);
    assertClose(`${name} y vs reference`, r.y, y0.y, exact);
    assertClose(`${name} den vs reference`, r.den, y0.den, { atol: 1e-10, rtol: 1e-12 });
    assertClose(`${name} dq vs the reference gradient`, g.dq, base.dq, exact);
    assertClose(`${name} dk vs the reference gradient`, g.dk, base.dk, exact);
    assertClose(`${name} dv vs the reference gradient`, g.dv, base.dv, exact);
  }
  const x = new Rng(2).randn(5 * 16), gphi = new Rng(3).randn(5 * 273);
  checkFiniteDiff(
    "taylor feature map",
    () => dot(ref.taylorFeatureMap(x, 16), gphi),
    x,
    ref.taylorFeatureMapBackward(x, gphi, 16),
    { tol: 1e-7 },
  );
  // the recurrent view computes the same outputs
  assertClose("recurrent ref", ref.recurrent(q, k, v, s).y, y0.y, { atol: 1e-12, rtol: 1e-12 });
});

fixtureCpuTest("linear attention ref: fixtures la.c0 and la.c1 (float64 reference)", async () => {
  const f = await fixtures();
  for (const p of ["la.c0", "la.c1"]) {
    const sq = shapeOf(f, `${p}.q`), sv = shapeOf(f, `${p}.v`);
    const s = { B: sq[0], H: sq[1], L: sq[2], F: sq[3], D: sv[3] };
    const q = ref.swapAxes12(fx(f, `${p}.q`), sq), k = ref.swapAxes12(fx(f, `${p}.k`), sq);
    const v = ref.swapAxes12(fx(f, `${p}.v`), sv), dy = ref.swapAxes12(fx(f, `${p}.dy`), sv);
    const { y, den } = ref.reference(q, k, v, s);
    const g = ref.referenceBackward(q, k, v, dy, s);
    const want = (n: string, shape: number[]) => ref.swapAxes12(fx(f, `${p}.${n}`), shape);
    // the fixtures are float64 results stored as f32: the f64 reference is well inside them
    assertClose(`${p}.y`, y, want("y", sv), fixtureTol(`${p}.y`));
    assertClose(`${p}.den`, den, want("den", [s.B, s.H, s.L, 1]), fixtureTol(`${p}.den`));
    assertClose(`${p}.dq`, g.dq, want("dq", sq), fixtureTol(`${p}.dq`));
    assertClose(`${p}.dk`, g.dk, want("dk", sq), fixtureTol(`${p}.dk`));
    assertClose(`${p}.dv`, g.dv, want("dv", sv), fixtureTol(`${p}.dv`));
  }
});

Deno.test("linear attention: resolveView maps the reference names", () => {
  assertEquals(resolveView("quadratic"), "quadratic");
  assertEquals(resolveView("fla_parallel"), "chunked");
  assertEquals(resolveView("fla_chunk"), "chunked");
  assertEquals(resolveView("linear"), "cumsum");
  assertEquals(resolveView("chunked"), "chunked");
  assertEquals(resolveView("cumsum"), "cumsum");
  assertThrows(
    () => resolveView("tk"),
    (e: unknown) =>
      e instanceof BasedError && /quadratic/.test(e.message) && /fla_chunk/.test(e.message),
  );
});

// ------------------------------------------------------------------ fixtures on the GPU

fixtureTest(
  "taylorFeatureMap: fixture phi_q / phi_k; backward of cdp_dQ gives num_dq",
  async (e) => {
    const f = await fixtures();
    const sq = shapeOf(f, "la.c0.q");
    for (const w of ["q", "k"]) {
      const x = e.tensor(tensorData(f, `la.c0.${w}`), sq);
      const phi = taylorFeatureMap(x);
      assertEquals(phi.shape, [...sq.slice(0, 3), 273]);
      assertClose(
        `phi_${w}`,
        await readF64(phi),
        fx(f, `la.c0.phi_${w}`),
        fixtureTol(`la.c0.phi_${w}`),
      );
      x.dispose();
      phi.dispose();
    }
    const q = param(e, fx(f, "la.c0.q"), sq);
    const phi = taylorFeatureMap(q);
    const g = e.tensor(tensorData(f, "la.c0.cdp_dQ"), phi.shape);
    backward(phi, g);
    assertClose(
      "phi backward",
      await readF64(q.grad!),
      fx(f, "la.c0.num_dq"),
      fixtureTol("la.c0.num_dq"),
    );
    for (const t of [q, q.grad!, phi, g]) t.dispose();
  },
);

for (const view of VIEWS) {
  fixtureTest(
    `linear attention [${view}]: fixtures la.c0, la.c1 forward and backward`,
    async (e) => {
      const f = await fixtures();
      for (const p of ["la.c0", "la.c1"]) {
        const sq = shapeOf(f, `${p}.q`), sv = shapeOf(f, `${p}.v`);
        const s = { B: sq[0], H: sq[1], L: sq[2], F: sq[3], D: sv[3] };
        const tl = (n: string) =>
          ref.swapAxes12(fx(f, `${p}.${n}`), n === "q" || n === "k" ? sq : sv);
        const r = await runView(e, { s, q: tl("q"), k: tl("k"), v: tl("v"), dy: tl("dy") }, view);
        const back = (x: F64, shape: number[]) => ref.swapAxes12(x, [s.B, s.L, s.H, shape[3]]);
        assertClose(`${p}.y [${view}]`, back(r.y, sv), fx(f, `${p}.y`), fixtureTol(`${p}.y`));
        assertClose(`${p}.dq [${view}]`, back(r.dq, sq), fx(f, `${p}.dq`), fixtureTol(`${p}.dq`));
        assertClose(`${p}.dk [${view}]`, back(r.dk, sq), fx(f, `${p}.dk`), fixtureTol(`${p}.dk`));
        assertClose(`${p}.dv [${view}]`, back(r.dv, sv), fx(f, `${p}.dv`), fixtureTol(`${p}.dv`));
      }
    },
  );
}

// ------------------------------------------------------------------ views vs reference and each other

/** Every view's forward and backward against the float64 reference and against each other. */
async function checkViews(e: Engine, cases: number[][]) {
  for (const [L, D, B, H, F] of cases) {
    const c = randomCase(100 + L, B, L, H, D, F);
    const y = ref.reference(c.q, c.k, c.v, c.s).y;
    const g = ref.referenceBackward(c.q, c.k, c.v, c.dy, c.s);
    const got = [];
    for (const view of VIEWS) {
      const r = await runView(e, c, view);
      const w = `L=${L} D=${D} F=${F} [${view}]`;
      // L = 1: y = v, so dq = dk = 0 exactly; only the absolute bound means anything
      const tqk = L === 1 ? { atol: TOL_REF.atol, rtol: 0 } : TOL_REF;
      assertClose(`${w} y`, r.y, y, TOL_REF);
      assertClose(`${w} dq`, r.dq, g.dq, tqk);
      assertClose(`${w} dk`, r.dk, g.dk, tqk);
      assertClose(`${w} dv`, r.dv, g.dv, TOL_REF);
      got.push(r);
    }
    for (let i = 1; i < got.length; i++) {
      for (const n of ["y", "dq", "dk", "dv"] as const) {
        const tol = L === 1 && (n === "dq" || n === "dk")
          ? { atol: TOL_VIEWS.atol, rtol: 0 }
          : TOL_VIEWS;
        assertClose(`L=${L} ${n}: ${VIEWS[i]} vs quadratic`, got[i][n], got[0][n], tol);
      }
    }
  }
}

gpuTest(
  "linear attention: all views match the reference and each other (L = 1, 17, 100, 257)",
  async (e) => {
    // lengths that are not multiples of the chunk (64) or key tile (32); D = 70 spans two
    // 64-column value tiles, D = 24 and 8 leave most of one idle; B·H odd; the last case runs
    // the generic feature-dim path (F = 8: 45 packed, 73 unpacked features)
    const cases = [[1, 24, 1, 3, 16], [17, 8, 2, 1, 16], [100, 24, 1, 3, 16], [257, 70, 1, 1, 16]];
    await checkViews(e, [...cases, [45, 12, 1, 2, 8]]);
  },
);

gpuTest(
  "linear attention: every view with the GL path's compacted workgroup arrays (L = 100, 257)",
  async (e) => {
    // the same kernels with their workgroup arrays re-declared as mat4x4 / vec4 elements
    // (tensor/wgsl_compact.ts): only addressing changes, so the same tolerances hold
    await withCompactWorkgroup(
      e,
      () => checkViews(e, [[100, 24, 1, 3, 16], [257, 70, 1, 1, 16], [45, 12, 1, 2, 8]]),
    );
  },
);

gpuTest("linear attention: gradients only for the inputs that require them", async (e) => {
  const c = randomCase(7, 1, 70, 2, 16);
  const g = ref.referenceBackward(c.q, c.k, c.v, c.dy, c.s);
  const { B, L, H, F, D } = c.s;
  for (const view of VIEWS) {
    const q = e.tensor(Float32Array.from(c.q), [B, L, H, F]);
    const k = param(e, c.k, [B, L, H, F]);
    const v = e.tensor(Float32Array.from(c.v), [B, L, H, D]);
    const dy = e.tensor(Float32Array.from(c.dy), [B, L, H, D]);
    const y = linearAttention(q, k, v, { view });
    backward(y, dy);
    assertClose(`dk only [${view}]`, await readF64(k.grad!), g.dk, TOL_REF);
    for (const t of [q, k, k.grad!, v, dy, y]) t.dispose();
  }
  // no recording under noGrad
  const q = param(e, c.q, [B, L, H, F]);
  const y = noGrad(() =>
    linearAttention(q, q, e.tensor(Float32Array.from(c.v), [B, L, H, D]), { view: "chunked" })
  );
  assertEquals(y.requiresGrad, false);
});

// ------------------------------------------------------------------ memory

gpuTest("linear attention: chunked and cumsum memory grows linearly in L", async (e) => {
  for (const view of ["chunked", "cumsum", "quadratic"] as const) {
    const peaks: number[] = [];
    for (const L of [128, 512]) {
      const c = randomCase(9, 1, L, 2, 32);
      const { B, H, F, D } = c.s;
      const q = param(e, c.q, [B, L, H, F]), k = param(e, c.k, [B, L, H, F]);
      const v = param(e, c.v, [B, L, H, D]);
      const dy = e.tensor(Float32Array.from(c.dy), [B, L, H, D]);
      await e.sync();
      e.pool.resetPeak();
      const y = linearAttention(q, k, v, { view });
      backward(y, dy);
      await e.sync();
      peaks.push(e.stats().peak);
      for (const t of [q.grad!, k.grad!, v.grad!, q, k, v, dy, y]) t.dispose();
    }
    const ratio = peaks[1] / peaks[0];
    // 4x the tokens: every buffer (inputs, outputs, gradients, chunk states) is O(L); the pool's
    // size classes add ≤ 12.5% either way. An L² buffer would make this 16.
    if (!(ratio > 3.3 && ratio < 4.7)) {
      throw new Error(`${view}: peak ${peaks[0]} -> ${peaks[1]} bytes, ratio ${ratio.toFixed(2)}`);
    }
  }
});

// ------------------------------------------------------------------ recurrent view

gpuTest("linear attention: recurrent prefill + steps reproduce the parallel view", async (e) => {
  const c = randomCase(11, 2, 40, 2, 24);
  const { B, L, H, F, D } = c.s;
  const P = 23; // prompt length
  const cut = (x: F64, X: number, t0: number, t1: number) => {
    const out = new Float32Array(B * (t1 - t0) * H * X);
    for (let b = 0; b < B; b++) {
      const src = (b * L + t0) * H * X;
      out.set(Float32Array.from(x.subarray(src, src + (t1 - t0) * H * X)), b * (t1 - t0) * H * X);
    }
    return out;
  };
  const want = ref.recurrent(c.q, c.k, c.v, c.s);
  const yPar = (await runView(e, c, "chunked")).y;
  const st = linearAttentionState(B, H, F, D);
  const kp = e.tensor(cut(c.k, F, 0, P), [B, P, H, F]);
  const vp = e.tensor(cut(c.v, D, 0, P), [B, P, H, D]);
  linearAttentionPrefill(st, kp, vp);
  const got = new Float64Array((L - P) * B * H * D), exp = new Float64Array(got.length);
  const expPar = new Float64Array(got.length);
  for (let t = P; t < L; t++) {
    const tq = e.tensor(cut(c.q, F, t, t + 1), [B, 1, H, F]);
    const tk = e.tensor(cut(c.k, F, t, t + 1), [B, 1, H, F]);
    const tv = e.tensor(cut(c.v, D, t, t + 1), [B, 1, H, D]);
    const y = linearAttentionStep(st, tq, tk, tv, 1e-12);
    const yv = await readF64(y);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < H * D; i++) {
        const o = (((t - P) * B + b) * H * D) + i, src = (b * L + t) * H * D + i;
        got[o] = yv[b * H * D + i];
        exp[o] = want.y[src];
        expPar[o] = yPar[src];
      }
    }
    for (const x of [tq, tk, tv, y]) x.dispose();
  }
  // the state sums up to L = 40 terms in f32 like the scans: same tolerance as the views
  assertClose("steps vs float64 recurrence", got, exp, TOL_REF);
  assertClose("steps vs parallel chunked view", got, expPar, TOL_VIEWS);
  // the final state (the prompt via prefill, then 17 steps) is the reference's: entries up to
  // |ks| = L = 40 (the constant feature) and |kv| ≈ 18, each a sum of 40 f32 products: worst case
  // 40·2⁻²⁴·40 ≈ 1e-4, observed ≤ 3.3e-6 abs, 1.2e-7 rel. L2
  const tol = { atol: 2e-5, rtol: 1e-4, relL2: 1e-6 };
  assertClose("kv state", await readF64(st.kv), want.kv, tol);
  assertClose("k state", await readF64(st.k), want.ks, tol);
  for (const x of [kp, vp, st.kv, st.k]) x.dispose();
});
