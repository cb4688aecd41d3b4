/** Per-dispatch timing (tensor/timing.ts): counts, GEMM FLOPs from the parameters, bytes bound. */
import assert from "node:assert";
import { gpuTest } from "../helpers.ts";
import { dispatchFlops } from "../../tensor/timing.ts";
import { gemm } from "../../kernels/matmul/mod.ts";
import { add } from "../../kernels/elementwise.ts";

Deno.test("dispatchFlops: 2·M·N·K per batch entry, split-K slices counted once", () => {
  const p = { M: 5, N: 7, K: 9, nSplit: 1 };
  assert.strictEqual(dispatchFlops(p, 1), 2 * 5 * 7 * 9);
  assert.strictEqual(dispatchFlops(p, 3), 3 * 2 * 5 * 7 * 9);
  assert.strictEqual(dispatchFlops({ ...p, nSplit: 4 }, 8), 2 * 2 * 5 * 7 * 9);
  assert.strictEqual(dispatchFlops({ n: 4 }, 1), 0);
});

gpuTest(
  "startTiming / stopTiming: per kernel, count, GPU ms, GEMM FLOPs and bytes bound",
  async (e) => {
    if (!e.hasTimestamps) return; // no timestamp queries on this adapter: timing is refused there
    const [M, N, K] = [33, 17, 9];
    const a = e.tensor(new Float32Array(M * K).fill(1), [M, K]);
    const b = e.tensor(new Float32Array(K * N).fill(2), [K, N]);
    const c = e.empty([M, N]);
    e.startTiming();
    gemm(c, a, b);
    gemm(c, a, b);
    const s = add(c, c);
    const t = await e.stopTiming();
    const g = [...t.entries()].filter(([k]) => k.startsWith("gemm_"));
    assert.strictEqual(g.length, 1);
    const [, gr] = g[0];
    assert.strictEqual(gr.count, 2);
    assert.strictEqual(gr.flops, 2 * 2 * M * N * K);
    assert.strictEqual(gr.bytes, 2 * 4 * (M * K + K * N + M * N));
    assert(gr.ms >= 0);
    const ew = [...t.entries()].filter(([k]) => !k.startsWith("gemm_"));
    assert.strictEqual(ew.length, 1);
    assert.strictEqual(ew[0][1].flops, 0);
    assert.strictEqual(ew[0][1].bytes, 3 * 4 * M * N);
    // after stopTiming the engine records as before
    const d = add(s, s);
    assert.strictEqual((await e.read(d))[0], 4 * 2 * K); // c = 2K, s = 2c, d = 2s
    for (const x of [a, b, c, s, d]) x.dispose();
  },
);
