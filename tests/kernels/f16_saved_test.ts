/**
 * f16 mixed precision's saved activations (kernels/f16/autocast.ts, the tape's
 * saved-tensor hooks): the tape keeps f16 copies of the activations ops mark
 * packable, one copy per activation however many ops save it.
 *
 * Tolerances (derived): u16 = 2^-11, u32 = 2^-24 as in f16_test.ts.
 * - The convolution and the attentions take autocastInput(x) = x̃, x rounded to
 *   f16 (|x̃ − x| ≤ u16·|x| in f16's normal range), and keep x̃ as f16, which is
 *   exact. So in f16 mode each op is its fp32 kernel applied to x̃, forward and
 *   backward: its outputs and gradients must equal the fp32 op's on x̃ bit for
 *   bit, and the float64 reference at x̃ within the fp32 kernels' own
 *   tolerances (those of conv1d_test.ts, linear_attention_test.ts and
 *   sliding_window_test.ts: the only arithmetic left is the f32 kernel's).
 * - RMSNorm keeps its input s as f16 (s̃ = s(1 + δ), |δ| ≤ u16) and its
 *   statistics r in f32, so the forward is unchanged (bit for bit) and only the
 *   backward reads s̃: with u = gy ⊙ w, gx = r·u − s̃·r³·(Σ u s̃)/N differs from
 *   the exact value by at most 2.01·u16·r³·|s_j|·Σ|u s|/N (first order in δ, s̃
 *   entering twice; 0.01 for the second order), and gw = Σ_rows gy ⊙ s̃ · r by
 *   u16·Σ_rows |gy s| r; plus the f32 kernel's evaluation error, bounded by
 *   γ_{N+8} (resp. γ_{rows+8}) of the magnitudes, doubled (r is itself an f32
 *   result).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { Autocast, autocastInput, setAutocast } from "../../kernels/f16/autocast.ts";
import { linear } from "../../kernels/f16/linear.ts";
import { causalConv1d } from "../../kernels/conv1d.ts";
import * as convRef from "../../kernels/conv1d_ref.ts";
import { linearAttention } from "../../kernels/linear_attention/mod.ts";
import * as laRef from "../../kernels/linear_attention/reference.ts";
import { slidingWindowAttention } from "../../kernels/sliding_window.ts";
import * as swRef from "../../kernels/sliding_window_ref.ts";
import { addRmsNorm } from "../../kernels/rmsnorm.ts";
import * as normRef from "../../kernels/rmsnorm_ref.ts";
import { roundF16 } from "../../tensor/f16.ts";
import { backward, tapeSaved } from "../../tensor/tape.ts";
import { type Tensor, tidy } from "../../tensor/tensor.ts";
import type { Engine } from "../../tensor/engine.ts";
import { assertClose, type F64, gpuTest, param, Rng, type Tol } from "../helpers.ts";

const U16 = 2 ** -11, U32 = 2 ** -24;

interface Run {
  out: Float32Array;
  grads: Float32Array[];
  /** dtypes of what the tape saved for the op under test (its last node) */
  saved: string[];
}

/** Forward + backward of `op` on fresh leaves; under `ac` when given. */
async function runOp(
  e: Engine,
  ac: Autocast | null,
  inputs: { data: F64; shape: number[] }[],
  op: (xs: Tensor[]) => Tensor,
  gy: F64,
): Promise<Run> {
  const prev = setAutocast(ac);
  try {
    const xs = inputs.map((i) => param(e, i.data, i.shape));
    let saved: string[] = [];
    const y = tidy(() => {
      const y = op(xs);
      const nodes = tapeSaved();
      saved = nodes[nodes.length - 1].saved.map((t) => t.dtype);
      backward(y, e.tensor(Float32Array.from(gy), y.shape));
      return y;
    });
    const out = await e.readF32(y);
    const grads = [];
    for (const x of xs) grads.push(await e.readF32(x.grad!));
    for (const t of [y, ...xs, ...xs.map((x) => x.grad)]) t?.dispose();
    return { out, grads, saved };
  } finally {
    setAutocast(prev);
  }
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/**
 * The op in f16 mode (inputs through autocastInput) vs the fp32 op on the host-rounded inputs:
 * bit-identical outputs and gradients; returns the rounded inputs and the f16 run.
 */
async function f16VsRounded(
  e: Engine,
  what: string,
  inputs: { data: F64; shape: number[]; keep?: boolean }[],
  op: (xs: Tensor[]) => Tensor,
  gy: F64,
): Promise<{ xr: F64[]; r: Run }> {
  const ac = new Autocast(e, null);
  const r = await runOp(
    e,
    ac,
    inputs,
    (xs) => op(xs.map((x, i) => inputs[i].keep ? x : autocastInput(x))),
    gy,
  );
  ac.destroy();
  // `keep`: a parameter (not rounded by the op)
  const xr = inputs.map((i) => i.keep ? i.data : i.data.map(roundF16));
  for (let i = 0; i < xr.length; i++) {
    for (let j = 0; j < xr[i].length; j++) {
      const x = inputs[i].data[j];
      assert(Math.abs(xr[i][j] - x) <= U16 * Math.abs(x) + 2 ** -25, `${what}: rounding`);
    }
  }
  const r32 = await runOp(e, null, xr.map((d, i) => ({ data: d, shape: inputs[i].shape })), op, gy);
  assertEquals(bits(r.out), bits(r32.out), `${what}: output vs fp32 at the rounded inputs`);
  r.grads.forEach((g, i) =>
    assertEquals(bits(g), bits(r32.grads[i]), `${what}: gradient ${i} vs fp32 at rounded inputs`)
  );
  return { xr, r };
}

/** |got − want| ≤ c·mag elementwise. */
function within(what: string, got: ArrayLike<number>, want: F64, mag: F64, c: number): void {
  for (let i = 0; i < want.length; i++) {
    const bound = c * mag[i] + 1e-30;
    if (!(Math.abs(got[i] - want[i]) <= bound)) {
      throw new Error(`${what}[${i}]: ${got[i]} vs ${want[i]}, |err| over ${bound}`);
    }
  }
}

gpuTest(
  "f16 saved: one f16 copy per activation, shared by its users; fp32 keeps f32",
  (e) => {
    const rng = new Rng(3);
    const T = 37, D = 24;
    const x = rng.randn(T * D), w = [0, 1, 2].map(() => rng.randn(16 * D, 0.2));
    for (const f16 of [true, false]) {
      const ac = f16 ? new Autocast(e, null) : null;
      const prev = setAutocast(ac);
      const xt = param(e, x, [T, D]);
      const ws = w.map((d) => param(e, d, [16, D]));
      if (ac) { for (const wt of ws) ac.weight(wt); // the persistent copies, outside the count
       }
      const live0 = e.stats().live;
      tidy(() => {
        const ys = ws.map((wt) => linear(xt, wt)); // the three projections of linear attention
        const savedX = tapeSaved().map((n) => n.saved[0]);
        if (f16) {
          assertEquals(savedX.map((t) => t.dtype), ["f16", "f16", "f16"]);
          assertEquals(new Set(savedX.map((t) => t.buffer)).size, 1, "one f16 copy of x");
        } else {
          assertEquals(savedX.map((t) => t.buffer), [xt.buffer, xt.buffer, xt.buffer]);
        }
        backward(ys[2], e.tensor(new Float32Array(T * 16).fill(1), [T, 16]));
      });
      for (const t of [xt.grad, ...ws.map((v) => v.grad)]) t?.dispose();
      assertEquals(e.stats().live, live0, "nothing of the step is left behind");
      for (const t of [xt, ...ws]) t.dispose();
      setAutocast(prev);
      ac?.destroy();
    }
  },
);

gpuTest(
  "f16 saved: causal conv on f16-rounded input, kept as f16 (bit-identical to fp32 at x̃; float64 within γ)",
  async (e) => {
    const rng = new Rng(4);
    for (const [B, L, C, K] of [[2, 37, 129, 3], [1, 700, 65, 3], [2, 19, 5, 8]]) {
      const n = B * L * C;
      const x = rng.randn(n, 3), w = rng.randn(C * K, 0.5), b = rng.randn(C), gy = rng.randn(n);
      const s = { B, L, C, K };
      const what = `conv B=${B} L=${L} C=${C} K=${K}`;
      const { xr, r } = await f16VsRounded(
        e,
        what,
        [
          { data: x, shape: [B, L, C] },
          { data: w, shape: [C, 1, K], keep: true },
          { data: b, shape: [C], keep: true },
        ],
        ([xt, wt, bt]) => causalConv1d(xt, wt, bt),
        gy,
      );
      assertEquals(r.saved[0], "f16", `${what}: the input is kept as f16`);
      // y = Σ_K w·x̃ + b: γ_{2K+2} of Σ|terms| (conv1d_test.ts); gx likewise over K taps
      const a = (v: F64) => v.map(Math.abs);
      const y = convRef.causalConv1d(xr[0], w, b, s),
        ym = convRef.causalConv1d(a(xr[0]), a(w), a(b), s);
      within(`${what} y`, r.out, y, ym, 1.001 * (2 * K + 2) * U32);
      const g = convRef.causalConv1dBackward(xr[0], w, gy, s);
      const gm = convRef.causalConv1dBackward(a(xr[0]), a(w), a(gy), s);
      within(`${what} gx`, r.grads[0], g.gx, gm.gx, 1.001 * 2 * K * U32);
      // gw, gb: sums over the B·L rows (any order): γ_{B·L+2}
      within(`${what} gw`, r.grads[1], g.gw, gm.gw, 1.001 * (B * L + 2) * U32);
      within(`${what} gb`, r.grads[2], g.gb, gm.gb, 1.001 * (B * L + 2) * U32);
    }
  },
);

gpuTest(
  "f16 saved: linear attention q, k, v f16-rounded and kept as f16; y and the normaliser f32",
  async (e) => {
    // the views' tolerance against the float64 reference (linear_attention_test.ts TOL_VIEWS)
    const TOL: Tol = { atol: 4e-5, rtol: 2e-4, relL2: 8e-6 };
    for (const view of ["chunked", "quadratic", "cumsum"] as const) {
      const [B, L, H, F, D] = [2, 77, 2, 16, 8];
      const rng = new Rng(5);
      const n = B * L * H;
      const q = rng.randn(n * F), k = rng.randn(n * F), v = rng.randn(n * D), dy = rng.randn(n * D);
      const what = `linear attention [${view}]`;
      const { xr, r } = await f16VsRounded(
        e,
        what,
        [
          { data: q, shape: [B, L, H, F] },
          { data: k, shape: [B, L, H, F] },
          { data: v, shape: [B, L, H, D] },
        ],
        ([qt, kt, vt]) => linearAttention(qt, kt, vt, { view, featureDim: F }),
        dy,
      );
      assertEquals(r.saved, ["f16", "f16", "f16", "f32", "f32"], `${what}: kept`);
      const s = { B, L, H, F, D };
      assertClose(`${what} y`, r.out, laRef.reference(xr[0], xr[1], xr[2], s).y, TOL);
      const g = laRef.referenceBackward(xr[0], xr[1], xr[2], dy, s);
      assertClose(`${what} dq`, r.grads[0], g.dq, TOL);
      assertClose(`${what} dk`, r.grads[1], g.dk, TOL);
      assertClose(`${what} dv`, r.grads[2], g.dv, TOL);
    }
  },
);

gpuTest(
  "f16 saved: sliding window qkv f16-rounded and kept as f16; out and log-sum-exp f32",
  async (e) => {
    const TOL: Tol = { atol: 1e-5, rtol: 1e-4, relL2: 2e-6 }; // sliding_window_test.ts
    for (const [L, H, Dh, W] of [[37, 3, 24, 9], [100, 2, 64, 128], [1, 2, 8, 4]]) {
      const s = { B: 2, L, H, Dh };
      const rng = new Rng(L + W);
      const x = rng.randn(2 * L * 3 * H * Dh), go = rng.randn(2 * L * H * Dh);
      const what = `sliding window L=${L} Dh=${Dh} W=${W}`;
      const { xr, r } = await f16VsRounded(
        e,
        what,
        [
          { data: x, shape: [2, L, 3, H, Dh] },
        ],
        ([t]) => slidingWindowAttention(t, { window: W }),
        go,
      );
      assertEquals(r.saved, ["f16", "f32", "f32"], `${what}: kept`);
      // an input that did not come through autocastInput is kept as it is (f32, exact)
      const ac = new Autocast(e, null);
      const direct = await runOp(
        e,
        ac,
        [{ data: x, shape: [2, L, 3, H, Dh] }],
        ([t]) => slidingWindowAttention(t, { window: W }),
        go,
      );
      ac.destroy();
      assertEquals(direct.saved, ["f32", "f32", "f32"], `${what}: not rounded, not packed`);
      assertClose(`${what} out`, r.out, swRef.slidingWindowAttention(xr[0], s, W).out, TOL);
      assertClose(`${what} dqkv`, r.grads[0], swRef.slidingWindowBackward(xr[0], go, s, W), TOL);
    }
  },
);

gpuTest(
  "f16 saved: RMSNorm keeps its input as f16, statistics f32 (forward unchanged; gradients in the derived bound)",
  async (e) => {
    for (const [rows, N] of [[37, 1024], [19, 257], [5, 3]]) {
      const rng = new Rng(rows * N);
      const x = rng.randn(rows * N, 4), res = rng.randn(rows * N, 4);
      const w = rng.randn(N, 0.5).map((v) => v + 1), gy = rng.randn(rows * N);
      const what = `addRmsNorm rows=${rows} N=${N}`;
      const op = ([xt, rt, wt]: Tensor[]) => addRmsNorm(xt, rt, wt)[1];
      const inputs = [
        { data: x, shape: [rows, N] },
        { data: res, shape: [rows, N] },
        { data: w, shape: [N] },
      ];
      const ac = new Autocast(e, null);
      const r = await runOp(e, ac, inputs, op, gy);
      ac.destroy();
      const r32 = await runOp(e, null, inputs, op, gy);
      assertEquals(r.saved, ["f16", "f32", "f32"], `${what}: s kept as f16, w and r f32`);
      assertEquals(bits(r.out), bits(r32.out), `${what}: forward as fp32`);
      const { s } = normRef.addRmsNorm(x, res, w);
      const { r: rs } = normRef.rmsNorm(s, w);
      const want = normRef.addRmsNormBackward(x, res, w, null, gy);
      const gxBound = new Float64Array(rows * N), gwBound = new Float64Array(N);
      for (let i = 0; i < rows; i++) {
        let su = 0;
        for (let j = 0; j < N; j++) su += Math.abs(gy[i * N + j] * w[j] * s[i * N + j]);
        const c3 = rs[i] ** 3 * su / N;
        for (let j = 0; j < N; j++) {
          const k = i * N + j, sa = Math.abs(s[k]);
          gxBound[k] = 2.01 * U16 * c3 * sa +
            2 * 1.001 * (N + 8) * U32 * (rs[i] * Math.abs(gy[k] * w[j]) + c3 * sa) + 1e-30;
          const t = Math.abs(gy[k] * s[k]) * rs[i];
          gwBound[j] += 1.001 * U16 * t + 2 * 1.001 * (rows + 8 + N) * U32 * t;
        }
      }
      for (
        const [name, got, ref, bound] of [
          ["gx", r.grads[0], want.gx, gxBound],
          ["gresidual", r.grads[1], want.gx, gxBound],
          ["gw", r.grads[2], want.gw, gwBound],
        ] as const
      ) {
        for (let k = 0; k < ref.length; k++) {
          if (!(Math.abs(got[k] - ref[k]) <= bound[k])) {
            throw new Error(`${what} ${name}[${k}]: ${got[k]} vs ${ref[k]} over ${bound[k]}`);
          }
        }
      }
    }
  },
);
