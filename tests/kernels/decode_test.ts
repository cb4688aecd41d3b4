/**
 * The generation kernels (kernels/decode.ts) against the float64 references
 * of the training ops, at awkward sizes: the conv tail + gated steps equal
 * u2 ⊙ silu(causal conv(u1)) token by token (kernel widths 2..4, a prompt
 * shorter than the tail); the ring cache + window step equal sliding-window
 * attention row by row (the ring wraps; a window wider than the sequence; a
 * head dim not a power of two); swigluHalves equals a ⊙ silu(b).
 *
 * Tolerance: every output is one short f32 reduction (K taps, or ≤ S keys of
 * an online softmax) of O(1) terms; 2^-24 relative per operation over ≤ 40
 * terms plus exp/sigmoid's few ulps stay below 1e-5; we allow 2e-5 absolute +
 * 1e-5 relative.
 */
import { assertClose, gpuTest, Rng, type Tol } from "../helpers.ts";
import { causalConv1d } from "../../kernels/conv1d_ref.ts";
import { slidingWindowAttention } from "../../kernels/sliding_window_ref.ts";
import {
  convStepGated,
  convTail,
  kvCacheWrite,
  swigluHalves,
  windowAttendStep,
} from "../../kernels/decode.ts";

const TOL: Tol = { atol: 2e-5, rtol: 1e-5 };
const silu = (x: number) => x / (1 + Math.exp(-x));

gpuTest("decode kernels: conv tail + gated steps = u2 ⊙ silu(conv(u1))", async (e) => {
  const rng = new Rng(1);
  for (const [B, L, C, K, P] of [[2, 9, 5, 3, 4], [1, 7, 33, 2, 1], [3, 6, 7, 4, 2]]) {
    const u1 = rng.randn(B * L * C), u2 = rng.randn(B * L * C), w = rng.randn(C * K);
    const conv = causalConv1d(u1, w, null, { B, L, C, K });
    const prompt = new Float32Array(B * P * C);
    for (let b = 0; b < B; b++) prompt.set(u1.subarray(b * L * C, (b * L + P) * C), b * P * C);
    const pt = e.tensor(prompt, [B, P, C]);
    const wt = e.tensor(Float32Array.from(w), [C, 1, K]);
    const tail = convTail(pt, K);
    for (let t = P; t < L; t++) {
      const z = new Float32Array(B * 2 * C);
      const want = new Float64Array(B * C);
      for (let b = 0; b < B; b++) {
        for (let c = 0; c < C; c++) {
          const i = (b * L + t) * C + c;
          z[b * 2 * C + c] = u1[i];
          z[b * 2 * C + C + c] = u2[i];
          want[b * C + c] = u2[i] * silu(conv[i]);
        }
      }
      const zt = e.tensor(z, [B, 1, 2 * C]);
      const y = convStepGated(tail, zt, wt);
      assertClose(`B${B} C${C} K${K} t${t}`, await e.readF32(y), want, TOL);
      zt.dispose();
      y.dispose();
    }
    for (const t of [pt, wt, tail]) t.dispose();
  }
});

gpuTest("decode kernels: ring cache + window step = sliding-window attention", async (e) => {
  const rng = new Rng(2);
  // [B, L, H, Dh, window, prompt P, slots S]; S = ⌊W/2⌋+1 unless the sequence is shorter
  for (
    const [B, L, H, Dh, W, P, S] of [
      [2, 23, 3, 12, 8, 6, 5],
      [1, 9, 2, 70, 64, 1, 9],
      [1, 17, 1, 5, 5, 2, 3],
    ]
  ) {
    const qkv = rng.randn(B * L * 3 * H * Dh);
    const want = slidingWindowAttention(qkv, { B, L, H, Dh }, W).out;
    const kc = e.empty([B, S, H, Dh]), vc = e.empty([B, S, H, Dh]);
    const rows = (t0: number, n: number) => {
      const out = new Float32Array(B * n * 3 * H * Dh);
      const row = 3 * H * Dh;
      for (let b = 0; b < B; b++) {
        out.set(qkv.subarray((b * L + t0) * row, (b * L + t0 + n) * row), b * n * row);
      }
      return out;
    };
    const pt = e.tensor(rows(0, P), [B, P, 3, H, Dh]);
    kvCacheWrite(pt, kc, vc, 0);
    pt.dispose();
    for (let t = P; t < L; t++) {
      const xt = e.tensor(rows(t, 1), [B, 1, 3, H, Dh]);
      kvCacheWrite(xt, kc, vc, t);
      const o = windowAttendStep(xt, kc, vc, t, Math.floor(W / 2), Dh ** -0.5);
      const w = new Float64Array(B * H * Dh);
      for (let b = 0; b < B; b++) {
        w.set(want.subarray((b * L + t) * H * Dh, (b * L + t + 1) * H * Dh), b * H * Dh);
      }
      assertClose(`B${B} H${H} Dh${Dh} W${W} t${t}`, await e.readF32(o), w, TOL);
      xt.dispose();
      o.dispose();
    }
    kc.dispose();
    vc.dispose();
  }
});

gpuTest("decode kernels: swigluHalves = a ⊙ silu(b)", async (e) => {
  const rng = new Rng(3);
  const [R, C] = [5, 37];
  const h = rng.randn(R * 2 * C);
  const want = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) want[r * C + c] = h[r * 2 * C + c] * silu(h[r * 2 * C + C + c]);
  }
  const ht = e.tensor(Float32Array.from(h), [R, 1, 2 * C]);
  const y = swigluHalves(ht);
  assertClose("swigluHalves", await e.readF32(y), want, TOL);
  ht.dispose();
  y.dispose();
});
