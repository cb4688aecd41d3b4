import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { slidingWindowAttention, SMEM_FLOATS_GL } from "../../kernels/sliding_window.ts";
import * as ref from "../../kernels/sliding_window_ref.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import { backward } from "../../tensor/tape.ts";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  type F64,
  fixtureManifest,
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

// GPU (f32) vs the float64 reference on N(0, 1) inputs: a softmax over ≤ W/2 + 1 keys with
// f32 statistics (max, Σexp in online form) and Dh-long f32 dot products. Observed ≤ 1.8e-6
// max abs, ≤ 3.4e-7 rel. L2 (Dh up to 128); 1e-5 absolute + 1e-4 relative and 2e-6 rel. L2
// leave a ~5x margin while a wrong mask or window edge (an O(0.1) change) cannot pass.
const TOL: Tol = { atol: 1e-5, rtol: 1e-4, relL2: 2e-6 };

const manifest = fixtureManifest();

/** Rotary on the host, GPT-NeoX halves, tables [L, Dh/2]; `inverse` rotates by −θ (the backward). */
function rotate(
  x: F64,
  s: ref.SwaShape,
  part: number,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  inverse: boolean,
): void {
  const half = s.Dh / 2, sg = inverse ? -1 : 1;
  for (let b = 0; b < s.B; b++) {
    for (let l = 0; l < s.L; l++) {
      for (let h = 0; h < s.H; h++) {
        const o = (((b * s.L + l) * 3 + part) * s.H + h) * s.Dh;
        for (let i = 0; i < half; i++) {
          const c = cos[l * half + i], sn = sg * sin[l * half + i];
          const x1 = x[o + i], x2 = x[o + half + i];
          x[o + i] = x1 * c - x2 * sn;
          x[o + half + i] = x2 * c + x1 * sn;
        }
      }
    }
  }
}

Deno.test("sliding window ref: gradient matches finite differences", () => {
  const rng = new Rng(1);
  for (const [L, W] of [[13, 6], [9, 1], [11, 100]]) {
    const s = { B: 1, L, H: 2, Dh: 8 };
    const x = rng.randn(L * 3 * 2 * 8), go = rng.randn(L * 2 * 8);
    checkFiniteDiff(
      `swa L=${L} W=${W}`,
      () => dot(ref.slidingWindowAttention(x, s, W).out, go),
      x,
      ref.slidingWindowBackward(x, go, s, W),
      { samples: 60, tol: 1e-7 },
    );
  }
});

fixtureTest("sliding window: fixture swa.* (rotated q, k + v) -> out, dqkv", async (e) => {
  const f = await readSafetensors(`${FIXTURES}/sliding_window.safetensors`);
  const info = manifest.info.sliding_window;
  const s = { B: info.B, L: info.L, H: info.H, Dh: info.Dh };
  const qkv = Float64Array.from(tensorData(f, "swa.qkv"));
  const cos = tensorData(f, "swa.cos"), sin = tensorData(f, "swa.sin");
  // host rotary reproduces the fixture's q_rot / k_rot (this checks the rotary used below)
  const rot = qkv.slice();
  rotate(rot, s, 0, cos, sin, false);
  rotate(rot, s, 1, cos, sin, false);
  const part = (x: F64, p: number) => {
    const out = new Float64Array(s.B * s.L * s.H * s.Dh), n = s.H * s.Dh;
    for (let t = 0; t < s.B * s.L; t++) {
      out.set(x.subarray((t * 3 + p) * n, (t * 3 + p + 1) * n), t * n);
    }
    return out;
  };
  const fxd = (n: string) => Float64Array.from(tensorData(f, n));
  assertClose("host rotary q", part(rot, 0), fxd("swa.q_rot"), fixtureTol("swa.q_rot"));
  assertClose("host rotary k", part(rot, 1), fxd("swa.k_rot"), fixtureTol("swa.k_rot"));
  // the attention core on the fixture's own rotated q, k (packed with v)
  const packed = rot.slice();
  const n = s.H * s.Dh;
  for (let t = 0; t < s.B * s.L; t++) {
    packed.set(fxd("swa.q_rot").subarray(t * n, (t + 1) * n), (t * 3) * n);
    packed.set(fxd("swa.k_rot").subarray(t * n, (t + 1) * n), (t * 3 + 1) * n);
  }
  const x = param(e, packed, [s.B, s.L, 3, s.H, s.Dh]);
  const out = slidingWindowAttention(x, { window: info.window_size, scale: info.softmax_scale });
  assertClose("swa.out", await readF64(out), fxd("swa.out"), fixtureTol("swa.out"));
  const dout = e.tensor(tensorData(f, "swa.dout"), [s.B, s.L, s.H, s.Dh]);
  backward(out, dout);
  const g = await readF64(x.grad!);
  // against the float64 reference of the core on the same (rotated) inputs
  const gRef = ref.slidingWindowBackward(
    packed,
    fxd("swa.dout"),
    s,
    info.window_size,
    info.softmax_scale,
  );
  assertClose("gradient w.r.t. rotated qkv vs reference", g, gRef, TOL);
  // the fixture's dqkv is w.r.t. the pre-rotary qkv: rotate the q, k parts back by −θ
  rotate(g, s, 0, cos, sin, true);
  rotate(g, s, 1, cos, sin, true);
  assertClose("swa.dqkv", g, fxd("swa.dqkv"), fixtureTol("swa.dqkv"));
  for (const t of [x, x.grad!, out, dout]) t.dispose();
});

gpuTest("sliding window: forward and backward vs reference (awkward sizes, windows)", async (e) => {
  // [L, H, Dh, W]: one token; odd W; window wider than the sequence (full causal, as the mixer
  // passes for MHA); Dh = 128 (smaller tiles), Dh = 5 (fewer columns than threads per row)
  const cases = [[1, 2, 8, 4], [37, 3, 24, 9], [100, 2, 64, 128], [70, 2, 32, 1000], [
    45,
    1,
    128,
    20,
  ], [
    33,
    2,
    5,
    0,
  ]];
  for (const [L, H, Dh, W] of cases) {
    const s = { B: 2, L, H, Dh };
    const rng = new Rng(L * 7 + W);
    const x = rng.randn(2 * L * 3 * H * Dh), go = rng.randn(2 * L * H * Dh);
    const t = param(e, x, [2, L, 3, H, Dh]);
    const o = slidingWindowAttention(t, { window: W });
    assertEquals(o.shape, [2, L, H, Dh]);
    const w = `L=${L} Dh=${Dh} W=${W}`;
    assertClose(`${w} out`, await readF64(o), ref.slidingWindowAttention(x, s, W).out, TOL);
    const tg = e.tensor(Float32Array.from(go), [2, L, H, Dh]);
    backward(o, tg);
    assertClose(`${w} dqkv`, await readF64(t.grad!), ref.slidingWindowBackward(x, go, s, W), TOL);
    for (const u of [t, t.grad!, o, tg]) u.dispose();
  }
});

gpuTest("sliding window: custom scale; no memory growth beyond O(L)", async (e) => {
  const peaks: number[] = [];
  for (const L of [128, 512]) {
    const s = { B: 1, L, H: 2, Dh: 32 };
    const rng = new Rng(5);
    const x = rng.randn(L * 3 * 2 * 32), go = rng.randn(L * 2 * 32);
    const t = param(e, x, [1, L, 3, 2, 32]);
    const tg = e.tensor(Float32Array.from(go), [1, L, 2, 32]);
    await e.sync();
    e.pool.resetPeak();
    const o = slidingWindowAttention(t, { window: 64, scale: 0.3 });
    backward(o, tg);
    await e.sync();
    peaks.push(e.stats().peak);
    if (L === 128) {
      assertClose(
        "scale 0.3",
        await readF64(o),
        ref.slidingWindowAttention(x, s, 64, 0.3).out,
        TOL,
      );
    }
    for (const u of [t, t.grad!, o, tg]) u.dispose();
  }
  const ratio = peaks[1] / peaks[0];
  if (!(ratio > 3.3 && ratio < 4.7)) throw new Error(`peak ratio ${ratio.toFixed(2)} for 4x L`);
});

gpuTest(
  "sliding window: the GL path's smaller tiles (workgroup memory budget) match the reference",
  async (e) => {
    // the kernels the GL software path gets (SMEM_FLOATS_GL, workgroup arrays compacted as
    // tensor/wgsl_compact.ts does there), run here on any adapter
    await withCompactWorkgroup(e, async () => {
      for (const [L, H, Dh, W] of [[37, 3, 32, 9], [100, 2, 32, 64], [45, 1, 128, 20]]) {
        const s = { B: 2, L, H, Dh };
        const rng = new Rng(L * 11 + W);
        const x = rng.randn(2 * L * 3 * H * Dh), go = rng.randn(2 * L * H * Dh);
        const t = param(e, x, [2, L, 3, H, Dh]);
        e.profile = new Map();
        const o = slidingWindowAttention(t, { window: W, smemFloats: SMEM_FLOATS_GL });
        const w = `L=${L} Dh=${Dh} W=${W} (GL tiles)`;
        assertClose(`${w} out`, await readF64(o), ref.slidingWindowAttention(x, s, W).out, TOL);
        const tg = e.tensor(Float32Array.from(go), [2, L, H, Dh]);
        backward(o, tg);
        assertClose(
          `${w} dqkv`,
          await readF64(t.grad!),
          ref.slidingWindowBackward(x, go, s, W),
          TOL,
        );
        const names = [...e.profile.keys()].filter((n) => n.startsWith("swa_"));
        e.profile = null;
        // the demo's head dim gets tiles under the budget: 16×16 forward, 16×8 backward
        if (Dh === 32) {
          assertEquals(
            names.filter((n) => /_d32_/.test(n)).sort(),
            ["swa_dkv_d32_r16t8", "swa_dq_d32_r16t8", "swa_fwd_d32_r16t16"],
          );
        }
        for (const u of [t, t.grad!, o, tg]) u.dispose();
      }
    });
  },
);
