/**
 * The FMA peak kernel (bench/peak.ts) against its float64 recurrence: each of
 * a thread's PEAK_CHAINS vec4 chains runs x ← x·a + b, iters·PEAK_UNROLL
 * times, from x0 + c·dx; the thread writes the sum of its chains' lanes.
 *
 * Tolerance, with u the unit roundoff of the arithmetic (2^-24 f32, 2^-11
 * f16) and a = 1/2: one fma rounds once, and the recurrence halves an error
 * each step, so a chain is off by at most u·(1 + 1/2 + …) = 2u (values ≤ 1).
 * The chains are summed in the element type (PEAK_CHAINS − 1 additions of
 * partial sums ≤ PEAK_CHAINS), then the four lanes in f32 (partial sums
 * ≤ 4·PEAK_CHAINS): bound = 4·(2u·C + (C − 1)·C·u) + 3·4C·2^-24, C = PEAK_CHAINS.
 */
import assert from "node:assert";
import { gpuTest } from "../helpers.ts";
import { PEAK_CHAINS, PEAK_UNROLL, peakFlops, runPeak } from "../../bench/peak.ts";

for (const el of ["f32", "f16"] as const) {
  gpuTest(`FMA peak kernel ${el}: outputs equal the float64 recurrence`, async (e) => {
    if (el === "f16" && !e.hasF16) return; // no shader-f16 on this adapter: nothing to check
    const p = { workgroups: 3, iters: 2, a: 0.5, b: 0.25, x0: -0.75, dx: 0.1875 };
    const out = e.empty([3 * 256]);
    runPeak(e, el, out, p);
    const got = await e.read(out);
    out.dispose();
    let want = 0;
    for (let c = 0; c < PEAK_CHAINS; c++) {
      let x = p.x0 + c * p.dx;
      for (let s = 0; s < p.iters * PEAK_UNROLL; s++) x = x * p.a + p.b;
      want += 4 * x;
    }
    const C = PEAK_CHAINS, u = el === "f16" ? 2 ** -11 : 2 ** -24;
    const bound = 4 * (2 * u * C + (C - 1) * C * u) + 3 * 4 * C * 2 ** -24;
    for (let i = 0; i < got.length; i++) {
      assert(
        Math.abs(got[i] - want) <= bound,
        `thread ${i}: ${got[i]} vs ${want} (bound ${bound})`,
      );
    }
  });
}

Deno.test("FMA peak kernel: FLOPs per dispatch", () => {
  // 2 workgroups x 256 threads x 3 iterations x unroll x chains x 4 lanes x 2
  assert.strictEqual(peakFlops(2, 3), 2 * 256 * 3 * PEAK_UNROLL * PEAK_CHAINS * 8);
});
