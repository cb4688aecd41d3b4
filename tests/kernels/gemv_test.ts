/**
 * gemv (decode's skinny product) against a float64 reference at awkward sizes
 * (rows 1..16, N not a multiple of the 32-row tile, K of a few vec4s and of many
 * lane strides), with and without bias. Tolerance: the f32 dot product of K
 * terms, summed in any order, is within γ_K·Σ|x_k w_k| (γ_K = K·u/(1 − K·u),
 * u = 2^-24) of the exact value, plus one rounding of the bias add.
 */
import { gpuTest, Rng } from "../helpers.ts";
import { gemv } from "../../kernels/gemv.ts";

gpuTest("gemv: y = x·Wᵀ (+ bias) matches float64 at awkward sizes", async (e) => {
  const rng = new Rng(5);
  const u = 2 ** -24;
  for (
    const [M, N, K, bias] of [[1, 1, 4, false], [3, 33, 20, true], [16, 70, 132, false], [
      7,
      65,
      8,
      true,
    ]] as const
  ) {
    const x = rng.randn(M * K), w = rng.randn(N * K), b = rng.randn(N);
    const xt = e.tensor(Float32Array.from(x), [M, 1, K]);
    const wt = e.tensor(Float32Array.from(w), [N, K]);
    const bt = e.tensor(Float32Array.from(b), [N]);
    const yt = gemv(xt, wt, bias ? bt : undefined);
    if (yt.shape.join() !== [M, 1, N].join()) throw new Error(`shape ${yt.shape}`);
    const y = await e.readF32(yt);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = bias ? b[n] : 0, mag = 0;
        for (let k = 0; k < K; k++) {
          s += x[m * K + k] * w[n * K + k];
          mag += Math.abs(x[m * K + k] * w[n * K + k]);
        }
        const tol = ((K * u) / (1 - K * u)) * mag + 2 * u * Math.abs(s) + 1e-30;
        if (!(Math.abs(y[m * N + n] - s) <= tol)) {
          throw new Error(`M${M} N${N} K${K} [${m}, ${n}]: ${y[m * N + n]} vs ${s} (tol ${tol})`);
        }
      }
    }
    for (const t of [xt, wt, bt, yt]) t.dispose();
  }
});
