import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { embedding, groupIds } from "../../kernels/embedding.ts";
import * as ref from "../../kernels/embedding_ref.ts";
import { clone } from "../../kernels/elementwise.ts";
import { backward, noGrad, tapeLength } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import { BasedError } from "../../errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { checkFiniteDiff, dot, type F64, gpuTest, param, readF64, Rng } from "../helpers.ts";

/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * Backward tolerance: gW[v, d] = acc + Σ of the c rows whose id is v, summed in f32 (in
 * position order, then added to acc): c additions, so |err| ≤ γ_c·(|acc| + Σ|g|) ≤
 * 1.001·c·u·(|acc| + Σ|g|) (Higham §4.2) — a rigorous bound for any order.
 */
function gradBound(g: F64, ids: Int32Array, V: number, D: number, acc: F64 | null): F64 {
  const mag = ref.embeddingBackward(g.map(Math.abs), ids, V, D);
  const count = new Float64Array(V);
  for (const id of ids) count[id]++;
  return mag.map((m, i) => {
    const a = acc ? Math.abs(acc[i]) : 0;
    return 1.001 * count[Math.floor(i / D)] * U * (m + a);
  });
}

function assertWithin(what: string, got: ArrayLike<number>, want: F64, bound: F64): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  }
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= bound[i])) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| = ${d.toExponential(3)} > ${
          bound[i].toExponential(3)
        })`,
      );
    }
  }
}

/** Ids with heavy repetition (a few ids take most positions) and some singletons. */
function skewedIds(rng: Rng, n: number, V: number): Int32Array {
  const hot = [0, V - 1, rng.int(V), rng.int(V)];
  return Int32Array.from({ length: n }, () => {
    const r = rng.next();
    return r < 0.5 ? hot[rng.int(hot.length)] : rng.int(V);
  });
}

const bits = (a: Float32Array | Int32Array | Uint32Array) =>
  new Uint32Array(a.buffer, a.byteOffset, a.length);

Deno.test("embedding ref: gradient matches finite differences", () => {
  const rng = new Rng(1);
  const V = 7, D = 5;
  const ids = Int32Array.from([3, 0, 3, 6, 3, 1, 0, 6, 6, 2]);
  const w = rng.randn(V * D), g = rng.randn(ids.length * D);
  // linear in w: central differences are exact up to f64 rounding
  checkFiniteDiff(
    "embedding dW",
    () => dot(ref.embedding(w, D, ids), g),
    w,
    ref.embeddingBackward(g, ids, V, D),
    { samples: V * D },
  );
});

Deno.test("embedding: groupIds builds the CSR grouping (sorted ids, increasing positions)", () => {
  const ids = Int32Array.from([4, 1, 4, 0, 1, 4]);
  const { csr, U: u } = groupIds(ids, 6);
  assertEquals(u, 3);
  // uniq [0, 1, 4] | offs [0, 1, 3, 6] | pos [3 | 1 4 | 0 2 5]
  assertEquals([...csr], [0, 1, 4, 0, 1, 3, 6, 3, 1, 4, 0, 2, 5]);
  const empty = groupIds(new Int32Array(0), 3);
  assertEquals([empty.U, [...empty.csr]], [0, [0]]);
});

async function runCase(
  e: Engine,
  rng: Rng,
  V: number,
  D: number,
  idShape: number[],
  leaf: boolean,
): Promise<void> {
  const n = idShape.reduce((a, b) => a * b, 1);
  const ids = skewedIds(rng, n, V);
  const w = rng.randn(V * D), g = rng.randn(n * D);
  const tag = `V=${V} D=${D} ids ${JSON.stringify(idShape)} ${leaf ? "leaf" : "non-leaf"}`;
  const tw = param(e, w, [V, D]);
  // a leaf's gradient buffer that already holds values: the scatter must add into it
  const acc0 = leaf ? rng.randn(V * D) : null;
  if (acc0) tw.grad = e.tensor(Float32Array.from(acc0), [V, D]);
  const tids = e.tensor(ids, idShape, "i32");
  const tg = e.tensor(Float32Array.from(g), [...idShape, D]);
  // non-leaf: the op returns a fresh gradient that clone's backward passes on
  const src = leaf ? tw : clone(tw);
  const y = embedding(src, tids, ids);
  assertEquals(y.shape, [...idShape, D]);
  // a gather copies: exact
  assertEquals([...(await e.read(y))], [...Float32Array.from(ref.embedding(w, D, ids))]);
  backward(y, tg);
  const want = ref.embeddingBackward(g, ids, V, D);
  if (acc0) { for (let i = 0; i < want.length; i++) want[i] += acc0[i]; }
  assertWithin(`${tag} dW`, await readF64(tw.grad!), want, gradBound(g, ids, V, D, acc0));
  for (const t of [tw, tw.grad!, tids, tg, y, src]) t.dispose();
}

gpuTest("embedding: forward and scatter-add backward vs reference (repeated ids)", async (e) => {
  const rng = new Rng(2);
  await runCase(e, rng, 37, 67, [3, 29], true);
  await runCase(e, rng, 37, 67, [3, 29], false);
  await runCase(e, rng, 1000, 300, [2, 150], true); // D > 256: threads stride over columns
  await runCase(e, rng, 50264, 5, [65], true); // the real vocabulary, narrow rows
  await runCase(e, rng, 11, 1, [1], false);
});

gpuTest("embedding: backward is bit-identical across runs", async (e) => {
  const rng = new Rng(3);
  const V = 64, D = 67, n = 2 * 257;
  const ids = skewedIds(rng, n, V);
  const w = rng.randn(V * D), g = rng.randn(n * D, 3);
  const tids = e.tensor(ids, [2, 257], "i32");
  const tg = e.tensor(Float32Array.from(g), [2, 257, D]);
  const runs: Uint32Array[] = [];
  for (let r = 0; r < 2; r++) {
    const tw = param(e, w, [V, D]);
    const y = embedding(tw, tids, ids);
    backward(y, tg);
    runs.push(bits(await e.read(tw.grad!)));
    for (const t of [tw, tw.grad!, y]) t.dispose();
  }
  assertEquals(runs[0], runs[1]);
  tids.dispose();
  tg.dispose();
});

gpuTest("embedding: ids outside the vocabulary throw a BasedError naming id, position, V", (e) => {
  const w = param(e, new Float64Array(10 * 3), [10, 3]);
  for (const [bad, pos, at] of [[10, 5, "[1, 2]"], [-1, 0, "[0, 0]"]] as const) {
    const host = Int32Array.from([1, 2, 3, 4, 5, 6]);
    host[pos] = bad;
    const ids = e.tensor(host, [2, 3], "i32");
    assertThrows(
      () => embedding(w, ids, host),
      (err: Error) =>
        err instanceof BasedError && err.message.includes(`token id ${bad} at position ${pos}`) &&
        err.message.includes(at) && err.message.includes("size 10"),
    );
    ids.dispose();
  }
  assertEquals(tapeLength(), 0);
  w.dispose();
});

gpuTest("embedding: no tape node (and no grouping) without gradients", async (e) => {
  const host = Int32Array.from([2, 0, 2]);
  const ids = e.tensor(host, [3], "i32");
  const w = param(e, Float64Array.from({ length: 12 }, (_, i) => i), [4, 3]);
  const outs: Tensor[] = [noGrad(() => embedding(w, ids, host))];
  w.requiresGrad = false;
  outs.push(embedding(w, ids, host));
  assertEquals(tapeLength(), 0);
  for (const y of outs) assertEquals([...(await e.read(y))], [6, 7, 8, 0, 1, 2, 6, 7, 8]);
  for (const t of [ids, w, ...outs]) t.dispose();
});
