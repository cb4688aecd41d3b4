import { deepStrictEqual as assertEquals } from "node:assert/strict";
import * as ew from "../../kernels/elementwise.ts";
import * as ref from "../../kernels/elementwise_ref.ts";
import { backward } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import type { Engine } from "../../tensor/engine.ts";
import { assertClose, checkFiniteDiff, dot, gpuTest, param, readF64, Rng } from "../helpers.ts";

// f32 elementwise math: one rounding per op, plus exp() in silu (WGSL exp is
// accurate to ~2 ulp on these backends): 1e-6 relative + 1e-7 absolute is
// ~10 ulp of the values (|x| <= 4) used here.
const TOL = { atol: 1e-7, rtol: 1e-6 };
const N = 1000 + 37; // not a multiple of the workgroup (nor of 4: the scalar kernels)
const N4 = 4 * 263; // a multiple of 4 (the vec4 kernels), not of the workgroup

Deno.test("elementwise ref: silu / swiglu gradients match finite differences", () => {
  const rng = new Rng(1);
  const x = rng.randn(50, 2), u = rng.randn(50), dy = rng.randn(50);
  checkFiniteDiff("silu", () => dot(ref.silu(x), dy), x, ref.siluBackward(x, dy));
  const [gu, gg] = ref.swigluBackward(u, x, dy);
  checkFiniteDiff("swiglu du", () => dot(ref.swiglu(u, x), dy), u, gu);
  checkFiniteDiff("swiglu dg", () => dot(ref.swiglu(u, x), dy), x, gg);
});

for (const n of [N, N4]) {
  gpuTest(
    `elementwise: add/sub/mul/scale/axpy forward and backward vs reference (n=${n})`,
    async (e) => {
      await arith(e, n);
    },
  );
}

async function arith(e: Engine, N: number) {
  const rng = new Rng(2);
  const a = rng.randn(N), b = rng.randn(N), dy = rng.randn(N);
  for (
    const [name, f, r, gr] of [
      ["add", ew.add, ref.add, (_a: Float64Array, _b: Float64Array, g: Float64Array) => [g, g]],
      [
        "sub",
        ew.sub,
        ref.sub,
        (_a: Float64Array, _b: Float64Array, g: Float64Array) => [g, g.map((v) => -v)],
      ],
      [
        "mul",
        ew.mul,
        ref.mul,
        (x: Float64Array, y: Float64Array, g: Float64Array) => [ref.mul(g, y), ref.mul(g, x)],
      ],
      [
        "axpy",
        (x: never, y: never) => ew.axpy(x, y, 0.3),
        (x: Float64Array, y: Float64Array) => ref.axpy(x, y, 0.3),
        (_a: Float64Array, _b: Float64Array, g: Float64Array) => [g, ref.scale(g, 0.3)],
      ],
    ] as const
  ) {
    const ta = param(e, a, [N]), tb = param(e, b, [N]), tdy = e.tensor(Float32Array.from(dy), [N]);
    const y = tidy(() => {
      // deno-lint-ignore no-explicit-any
      const y = (f as any)(ta, tb);
      return y;
    });
    assertClose(`${name} forward`, await readF64(y), r(a, b), TOL);
    backward(y, tdy);
    const [ga, gb] = gr(a, b, dy);
    assertClose(`${name} grad a`, await readF64(ta.grad!), ga, TOL);
    assertClose(`${name} grad b`, await readF64(tb.grad!), gb, TOL);
    for (const t of [ta, tb, tdy, y, ta.grad!, tb.grad!]) t.dispose();
  }
}

for (const n of [N, N4]) {
  gpuTest(`elementwise: silu and swiglu forward and backward vs reference (n=${n})`, async (e) => {
    await siluSwiglu(e, n);
  });
}

async function siluSwiglu(e: Engine, N: number) {
  const rng = new Rng(3);
  const u = rng.randn(N, 2), g = rng.randn(N, 2), dy = rng.randn(N);
  const tu = param(e, u, [N]), tg = param(e, g, [N]), tdy = e.tensor(Float32Array.from(dy), [N]);
  const y = ew.swiglu(tu, tg);
  assertClose("swiglu forward", await readF64(y), ref.swiglu(u, g), TOL);
  backward(y, tdy);
  const [gu, gg] = ref.swigluBackward(u, g, dy);
  assertClose("swiglu du", await readF64(tu.grad!), gu, TOL);
  assertClose("swiglu dg", await readF64(tg.grad!), gg, TOL);
  tg.grad = null;
  const s = ew.silu(tg);
  assertClose("silu forward", await readF64(s), ref.silu(g), TOL);
  backward(s, tdy);
  assertClose("silu grad", await readF64(tg.grad!), ref.siluBackward(g, dy), TOL);
}

gpuTest("tape: gradients of a reused tensor are summed; pool returns to its level", async (e) => {
  const rng = new Rng(4);
  const a = rng.randn(N);
  const live0 = e.stats().live;
  const ta = param(e, a, [N]);
  // y = a*a + a  ->  dy/da = 2a + 1
  const y = tidy(() => ew.add(ew.mul(ta, ta), ta));
  const ones = e.tensor(new Float32Array(N).fill(1), [N]);
  backward(y, ones);
  assertClose("d(a*a+a)", await readF64(ta.grad!), a.map((v) => 2 * v + 1), TOL);
  for (const t of [ta, ta.grad!, y, ones]) t.dispose();
  assertEquals(e.stats().live, live0);
});

gpuTest("fill / copy / accumulate (i32 and f32)", async (e) => {
  const t = e.empty([N], "i32");
  ew.fill(t, 7);
  assertEquals([...(await e.read(t))].every((v) => v === 7), true);
  const f = e.tensor(Float32Array.from({ length: N }, (_, i) => i), [N]);
  const g = e.empty([N]);
  ew.copyInto(g, f);
  ew.accumulate(g, f);
  const r = await e.read(g);
  assertEquals(r[N - 1], 2 * (N - 1));
  for (const x of [t, f, g]) x.dispose();
});
