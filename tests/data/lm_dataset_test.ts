/** LM windows, the training sampler (seeded order, DDP layout, exact resume) and eval batches. */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import { epochPermutation, evalBatches, LMDataset, TrainSampler } from "../../data/lm_dataset.ts";
import { BasedError } from "../../errors.ts";

const iota = (n: number) => Uint16Array.from({ length: n }, (_, i) => i);

Deno.test("lm_dataset: n_seq = floor((N - 1) / L), labels shifted by one", () => {
  assertEquals(new LMDataset(iota(11), 4).length, 2);
  assertEquals(new LMDataset(iota(9), 4).length, 2); // the last label is the last token
  assertEquals(new LMDataset(iota(8), 4).length, 1);
  assertEquals(new LMDataset(iota(4), 4).length, 0);
  assertEquals(new LMDataset(new Uint16Array(0), 4).length, 0);
  const ds = new LMDataset(iota(9), 4);
  const e0 = ds.example(0), e1 = ds.example(1);
  assertEquals([...e0.inputs], [0, 1, 2, 3]);
  assertEquals([...e0.labels], [1, 2, 3, 4]);
  assertEquals([...e1.inputs], [4, 5, 6, 7]);
  assertEquals([...e1.labels], [5, 6, 7, 8]);
  assert(e0.inputs instanceof Int32Array && e0.labels instanceof Int32Array);
});

Deno.test("lm_dataset: batch stacks windows row-major and checks indices", () => {
  const tokens = Uint16Array.from({ length: 101 }, (_, i) => (i * 7919) % 50257);
  const ds = new LMDataset(tokens, 10);
  assertEquals(ds.length, 10);
  const b = ds.batch([3, 0, 9]);
  assertEquals(b.inputs.length, 30);
  for (const [row, i] of [3, 0, 9].entries()) {
    for (let t = 0; t < 10; t++) {
      assertEquals(b.inputs[row * 10 + t], tokens[i * 10 + t]);
      assertEquals(b.labels[row * 10 + t], tokens[i * 10 + t + 1]);
    }
  }
  assertThrows(() => ds.batch([10]), RangeError);
  assertThrows(() => ds.batch([-1]), RangeError);
  assertThrows(() => new LMDataset(tokens, 0), BasedError);
});

Deno.test("lm_dataset: epoch permutations are seeded, documented and distinct per epoch", () => {
  const p = epochPermutation(1000, 0, 0);
  assertEquals([...p].sort((a, b) => a - b), [...iota(1000)].map(Number));
  assertEquals([...epochPermutation(1000, 0, 0)], [...p]);
  assert(p.some((x, i) => x !== epochPermutation(1000, 0, 1)[i]));
  // seed + epoch is what counts: (seed 5, epoch 2) = (seed 7, epoch 0)
  assertEquals([...epochPermutation(50, 5, 2)], [...epochPermutation(50, 7, 0)]);
  // golden values from an independent Python transcription of the documented rule (fmix32
  // seed, mulberry32, Fisher–Yates): they pin the data order across versions
  assertEquals([...epochPermutation(10, 0, 0)], GOLDEN_0_0);
  assertEquals([...epochPermutation(10, 1111, 3)], GOLDEN_1111_3);
  assertEquals([...epochPermutation(1, 0, 0)], [0]);
});
const GOLDEN_0_0 = [3, 8, 6, 4, 5, 9, 7, 1, 0, 2];
const GOLDEN_1111_3 = [3, 1, 0, 2, 4, 7, 8, 5, 6, 9];

Deno.test("lm_dataset: sampler batches cover each epoch once, last batch smaller", () => {
  const s = new TrainSampler(10, { seed: 0, batchSize: 4 });
  assertEquals(s.batchesPerEpoch, 3);
  for (let e = 0; e < 3; e++) {
    assertEquals(s.epoch, e);
    const bs = [s.next(), s.next(), s.next()];
    assertEquals(bs.map((b) => b.length), [4, 4, 2]);
    assertEquals(bs.flat(), [...epochPermutation(10, 0, e)]);
  }
  assertEquals(s.state(), { epoch: 3, index: 0 });
  const noShuffle = new TrainSampler(5, { batchSize: 2, shuffle: false });
  assertEquals([noShuffle.next(), noShuffle.next(), noShuffle.next(), noShuffle.next()], [
    [0, 1],
    [2, 3],
    [4],
    [0, 1],
  ]);
  const dl = new TrainSampler(5, { batchSize: 2, shuffle: false, dropLast: true });
  assertEquals([dl.next(), dl.next(), dl.next()], [[0, 1], [2, 3], [0, 1]]);
});

Deno.test("lm_dataset: sampler state saved mid-epoch restores the identical continuation", () => {
  for (const [n, bs, W, r] of [[37, 5, 1, 0], [37, 5, 4, 3], [100, 8, 8, 2], [7, 3, 2, 1]]) {
    const a = new TrainSampler(n, { seed: 1111, batchSize: bs, worldSize: W, rank: r });
    const total = a.batchesPerEpoch * 3;
    for (const cut of [0, 1, a.batchesPerEpoch - 1, a.batchesPerEpoch, a.batchesPerEpoch + 2]) {
      const ref = new TrainSampler(n, { seed: 1111, batchSize: bs, worldSize: W, rank: r });
      for (let i = 0; i < cut; i++) ref.next();
      const saved = JSON.parse(JSON.stringify(ref.state())); // as a checkpoint stores it
      const b = new TrainSampler(n, { seed: 1111, batchSize: bs, worldSize: W, rank: r });
      b.restore(saved);
      for (let i = cut; i < total; i++) {
        assertEquals(b.next(), ref.next(), `n ${n} W ${W} cut ${cut} batch ${i}`);
      }
    }
  }
  const s = new TrainSampler(10, { batchSize: 4 });
  s.next();
  assertEquals(s.state(), { epoch: 0, index: 4 });
  assertThrows(() => s.restore({ epoch: 0, index: 11 }), BasedError);
  assertThrows(() => s.restore({ epoch: -1, index: 0 }), BasedError);
  // index == samples per epoch means "epoch done"
  s.restore({ epoch: 2, index: 10 });
  assertEquals(s.state(), { epoch: 3, index: 0 });
});

Deno.test("lm_dataset: DDP layout covers every sequence once per epoch (wrap-around padding)", () => {
  for (const [n, W] of [[12, 4], [10, 3], [5, 8], [64, 8], [1, 2]]) {
    for (const epoch of [0, 1]) {
      const perm = [...epochPermutation(n, 0, epoch)];
      const per = Math.ceil(n / W);
      const all: number[] = [];
      for (let r = 0; r < W; r++) {
        const s = new TrainSampler(n, { batchSize: 3, worldSize: W, rank: r });
        s.restore({ epoch, index: 0 });
        const mine: number[] = [];
        while (s.epoch === epoch) mine.push(...s.next());
        assertEquals(mine.length, per);
        // rank r takes positions r, r + W, … of the padded permutation
        assertEquals(mine, Array.from({ length: per }, (_, k) => perm[(r + k * W) % n]));
        all.push(...mine);
      }
      assertEquals(all.length, per * W);
      assertEquals(new Set(all).size, n, `n ${n} W ${W}: every sequence appears`);
      if (n % W === 0) assertEquals(all.length, n); // no duplicates when it divides
    }
  }
  assertThrows(() => new TrainSampler(10, { batchSize: 2, worldSize: 2, rank: 2 }), BasedError);
  assertThrows(() => new TrainSampler(0, { batchSize: 2 }), BasedError);
});

Deno.test("lm_dataset: evalBatches are sequential, the last one smaller; sharded without duplicates", () => {
  const ds = new LMDataset(iota(71), 10); // 7 sequences
  const bs = [...evalBatches(ds, 3)];
  assertEquals(bs.map((b) => b.indices), [[0, 1, 2], [3, 4, 5], [6]]);
  assertEquals([...bs[2].inputs], [...ds.example(6).inputs]);
  const sharded = [0, 1, 2].flatMap((r) =>
    [...evalBatches(ds, 2, { worldSize: 3, rank: r })].flatMap((b) => b.indices)
  );
  assertEquals(sharded.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6]);
});
