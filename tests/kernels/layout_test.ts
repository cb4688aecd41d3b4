import { deepStrictEqual as assertEquals } from "node:assert/strict";
import * as L from "../../kernels/layout.ts";
import * as ref from "../../kernels/layout_ref.ts";
import { add } from "../../kernels/elementwise.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  type F64,
  gpuTest,
  param,
  readF64,
  Rng,
} from "../helpers.ts";

// Layout ops only move 32-bit words: forward and backward must be bit-exact.
const EXACT = { atol: 0, rtol: 0 };

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) {
    for (let i = 0; i <= p.length; i++) out.push([...p.slice(0, i), n - 1, ...p.slice(i)]);
  }
  return out;
}

/** Runs `f` on a fresh leaf from `x`, backpropagates `dy`; returns [y, x.grad] as f64. */
async function fwdBwd(
  e: Engine,
  x: F64,
  shape: number[],
  f: (t: Tensor) => Tensor,
  dy: F64,
): Promise<[F64, F64]> {
  const tx = param(e, x, shape);
  const y = f(tx);
  const tdy = e.tensor(Float32Array.from(dy), [...y.shape]);
  const out = await readF64(y);
  backward(y, tdy);
  const g = await readF64(tx.grad!);
  for (const t of [tx, tx.grad!, y, tdy]) t.dispose();
  return [out, g];
}

Deno.test("layout ref: permute / narrow / concat / split gradients match finite differences", () => {
  const rng = new Rng(1);
  const shape = [3, 4, 5];
  const x = rng.randn(60);
  const perm = [2, 0, 1];
  const dy = rng.randn(60);
  checkFiniteDiff(
    "permute",
    () => dot(ref.permute(x, shape, perm), dy),
    x,
    ref.permuteBackward(dy, shape, perm),
  );
  for (let axis = 0; axis < 3; axis++) {
    const len = shape[axis] - 2;
    const dn = rng.randn((60 / shape[axis]) * len);
    checkFiniteDiff(
      `narrow axis ${axis}`,
      () => dot(ref.narrow(x, shape, axis, 1, len), dn),
      x,
      ref.narrowBackward(dn, shape, axis, 1, len),
    );
  }
  const sizes = [1, 3, 1];
  const g0 = rng.randn(12), g2 = rng.randn(12);
  checkFiniteDiff(
    "split",
    () => {
      const [a, , c] = ref.split(x, shape, 1, sizes);
      return dot(a, g0) + dot(c, g2);
    },
    x,
    ref.splitBackward([g0, null, g2], shape, 1, sizes),
  );
  const y = rng.randn(3 * 4 * 2);
  const dc = rng.randn(3 * 4 * 7);
  const shapes = [shape, [3, 4, 2]];
  const cat = () => dot(ref.concat([x, y], shapes, 2), dc);
  checkFiniteDiff("concat x", cat, x, ref.narrow(dc, [3, 4, 7], 2, 0, 5));
  checkFiniteDiff("concat y", cat, y, ref.narrow(dc, [3, 4, 7], 2, 5, 2));
});

gpuTest("reshape: a view of the same storage; backward reshapes the gradient back", async (e) => {
  const rng = new Rng(2);
  const x = rng.randn(3 * 5 * 7), dy = rng.randn(3 * 5 * 7);
  const tx = param(e, x, [3, 5, 7]);
  const y = L.reshape(tx, [-1, 7]);
  assertEquals(y.shape, [15, 7]);
  assertEquals(y.buffer, tx.buffer);
  assertEquals(y.byteOffset, tx.byteOffset);
  const z = L.reshape(y, [105]);
  const tdy = e.tensor(Float32Array.from(dy), [105]);
  backward(z, tdy);
  assertEquals(tx.grad!.shape, [3, 5, 7]);
  assertClose("reshape grad", await readF64(tx.grad!), dy, EXACT);
  for (const t of [tx, tx.grad!, y, z, tdy]) t.dispose();
});

gpuTest(
  "permute: all permutations of rank 3 and 4, 16 of rank 5 (odd dims), forward and backward",
  async (e) => {
    const rng = new Rng(3);
    // small odd dims exercise the generic strided copy (a size-1 axis is merged away);
    // [9, 11, 13] and [3, 17, 9, 10] put >= 8 on both tiled axes (the 32x32 tile path, partial tiles)
    const cases: number[][] = [[3, 5, 7], [9, 11, 13], [3, 5, 1, 7], [3, 17, 9, 10], [
      2,
      3,
      5,
      1,
      7,
    ], [
      2,
      3,
      4,
      5,
      7,
    ]];
    e.profile = new Map();
    for (const shape of cases) {
      const n = size(shape);
      const x = rng.randn(n), dy = rng.randn(n);
      // rank 5 has 120 permutations: a fixed sample of 16 keeps the test fast
      const perms = permutations(shape.length);
      const pick = perms.length > 24
        ? perms.filter((_, i) => i % 8 === 0 || i === perms.length - 1)
        : perms;
      for (const perm of pick) {
        const [y, g] = await fwdBwd(e, x, shape, (t) => L.permute(t, perm), dy);
        const tag = `permute ${JSON.stringify(shape)} by ${JSON.stringify(perm)}`;
        assertClose(`${tag} forward`, y, ref.permute(x, shape, perm), EXACT);
        assertClose(
          `${tag} backward`,
          g,
          ref.permuteBackward(dy, shape, perm),
          EXACT,
        );
      }
    }
    // the moved-innermost-axis cases above must have gone through the tiled kernel
    const used = [...e.profile.keys()];
    e.profile = null;
    assertEquals(used.some((k) => k.startsWith("layout_tile")), true);
    assertEquals(used.some((k) => k.startsWith("layout_copy")), true);
  },
);

gpuTest("permute: transpose of [37, 53] and i32 data are bit copies", async (e) => {
  const rng = new Rng(4);
  const x = rng.randn(37 * 53), dy = rng.randn(37 * 53);
  const [y, g] = await fwdBwd(e, x, [37, 53], (t) => L.transpose(t, 0, -1), dy);
  assertClose("transpose forward", y, ref.permute(x, [37, 53], [1, 0]), EXACT);
  assertClose("transpose backward", g, ref.permute(dy, [53, 37], [1, 0]), EXACT);
  const ints = Int32Array.from({ length: 3 * 5 * 7 }, (_, i) => (i * 7919) % 1000 - 500);
  const ti = e.tensor(ints, [3, 5, 7], "i32");
  const pi = L.permute(ti, [2, 0, 1]);
  assertEquals(pi.dtype, "i32");
  const got = [...(await e.read(pi))];
  assertEquals(got, [...ref.permute(Float64Array.from(ints), [3, 5, 7], [2, 0, 1])]);
  ti.dispose();
  pi.dispose();
});

gpuTest("narrow: every axis of rank-3 and rank-4 tensors, forward and backward", async (e) => {
  const rng = new Rng(5);
  for (const shape of [[5, 7, 9], [3, 5, 7, 12]]) {
    const n = size(shape);
    const x = rng.randn(n);
    for (let axis = 0; axis < shape.length; axis++) {
      for (
        const [start, len] of [[0, 1], [1, shape[axis] - 2], [shape[axis] - 3, 3], [0, shape[axis]]]
      ) {
        const dy = rng.randn((n / shape[axis]) * len);
        const [y, g] = await fwdBwd(
          e,
          x,
          shape,
          (t) => L.narrow(t, axis - shape.length, start, len),
          dy,
        );
        const tag = `narrow ${JSON.stringify(shape)} axis ${axis} [${start}, +${len})`;
        assertClose(`${tag} forward`, y, ref.narrow(x, shape, axis, start, len), EXACT);
        assertClose(`${tag} backward`, g, ref.narrowBackward(dy, shape, axis, start, len), EXACT);
      }
    }
  }
});

gpuTest("concat: three inputs along every axis, forward and backward", async (e) => {
  const rng = new Rng(6);
  const base = [3, 5, 7];
  for (let axis = 0; axis < 3; axis++) {
    const shapes = [1, 4, 2].map((k) => base.map((d, i) => (i === axis ? k : d)));
    const xs = shapes.map((s) => rng.randn(size(s)));
    const ts = xs.map((x, i) => param(e, x, shapes[i]));
    const y = L.concat(ts, axis);
    const want = ref.concat(xs, shapes, axis);
    assertClose(`concat axis ${axis} forward`, await readF64(y), want, EXACT);
    const dy = rng.randn(want.length);
    const tdy = e.tensor(Float32Array.from(dy), [...y.shape]);
    backward(y, tdy);
    let start = 0;
    const outShape = [...y.shape];
    for (let i = 0; i < 3; i++) {
      const len = shapes[i][axis];
      assertClose(
        `concat axis ${axis} grad ${i}`,
        await readF64(ts[i].grad!),
        ref.narrow(dy, outShape, axis, start, len),
        EXACT,
      );
      start += len;
      ts[i].grad!.dispose();
      ts[i].dispose();
    }
    y.dispose();
    tdy.dispose();
  }
});

gpuTest("split: a missing output gradient becomes zeros; one node for all outputs", async (e) => {
  const rng = new Rng(7);
  const shape = [4, 5, 13];
  for (const [axis, sizes] of [[-1, [5, 3, 5]], [1, [2, 1, 2]]] as const) {
    const x = rng.randn(size(shape));
    const tx = param(e, x, shape);
    const outs = L.split(tx, axis, [...sizes]);
    const a = (axis + 3) % 3;
    const want = ref.split(x, shape, a, [...sizes]);
    for (let i = 0; i < 3; i++) {
      assertClose(`split ${axis} output ${i}`, await readF64(outs[i]), want[i], EXACT);
    }
    // only outputs 0 and 2 (equal shapes) reach the root: output 1 gets no gradient
    const root = add(outs[0], outs[2]);
    const dy = rng.randn(root.size);
    const tdy = e.tensor(Float32Array.from(dy), [...root.shape]);
    backward(root, tdy);
    assertClose(
      `split ${axis} backward`,
      await readF64(tx.grad!),
      ref.splitBackward([dy, null, dy], shape, a, [...sizes]),
      EXACT,
    );
    for (const t of [tx, tx.grad!, root, tdy, ...outs]) t.dispose();
  }
});

gpuTest(
  "split / narrow: last-axis halves of [B, L, 2n] use the vec4 copy when n % 4 == 0",
  async (e) => {
    const rng = new Rng(8);
    for (
      const [shape, half, vec] of [[[3, 37, 4104], 2052, true], [[37, 2050], 1025, false]] as const
    ) {
      const x = rng.randn(size(shape));
      const tx = param(e, x, [...shape]);
      e.profile = new Map();
      const [u, g] = L.split(tx, -1, [half, half]);
      const used = [...e.profile.keys()];
      e.profile = null;
      assertEquals(used, [vec ? "layout_copy2_v4" : "layout_copy2_v1"]);
      const a = shape.length - 1;
      const want = ref.split(x, shape, a, [half, half]);
      assertClose("first half", await readF64(u), want[0], EXACT);
      assertClose("second half", await readF64(g), want[1], EXACT);
      const dy = rng.randn(u.size);
      const tdy = e.tensor(Float32Array.from(dy), [...u.shape]);
      backward(g, tdy);
      assertClose(
        "half backward",
        await readF64(tx.grad!),
        ref.splitBackward([null, dy], shape, a, [half, half]),
        EXACT,
      );
      for (const t of [tx, tx.grad!, u, g, tdy]) t.dispose();
    }
  },
);
