/**
 * The loss scaler (optim/scaler.ts) with GradClip and AdamW: scaled gradients
 * give exactly the fp32 update (the scale is a power of two, so scaling and
 * unscaling commute with every rounding: bit-identical, no tolerance), an
 * Inf/NaN gradient or the found-inf word skips the step and halves the scale,
 * the scale doubles after `growthInterval` clean steps, and the state
 * round-trips through read()/load() (what checkpoints store).
 */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import type { Engine } from "../../tensor/engine.ts";
import { type ParamSpec, ParamStore } from "../../tensor/params.ts";
import { AdamW } from "../../optim/adamw.ts";
import { GradClip } from "../../optim/clip.ts";
import { LossScaler } from "../../optim/scaler.ts";
import { SCALER } from "../../kernels/f16/cast.ts";
import { gpuTest, Rng } from "../helpers.ts";

const SIZES = [2999, 1, 77, 1025, 64, 513];

function makeStore(e: Engine, seed: number) {
  const rng = new Rng(seed);
  const specs: ParamSpec[] = SIZES.map((n, i) => ({
    name: `p${i}`,
    shape: [n],
    group: i % 3 === 1 ? "no_decay" : "decay",
    init: Float32Array.from(rng.randn(n, 0.3)),
  }));
  const store = new ParamStore(e, specs, ["decay", "no_decay"], { maxChunkElements: 3008 });
  const adam = new AdamW(store, { decay: { weightDecay: 0.1 }, no_decay: { weightDecay: 0 } }, {
    lr: 1e-3,
    betas: [0.9, 0.95],
    eps: 1e-8,
  });
  return { store, specs, adam };
}

async function snapshot(store: ParamStore, adam: AdamW): Promise<string[]> {
  const vals = await store.read("values");
  const st = await adam.state();
  const out: string[] = [];
  for (const p of store.params) {
    for (const a of [vals, st.m, st.v]) {
      out.push([...new Uint32Array(a.get(p.name)!.slice().buffer)].join(","));
    }
  }
  return out;
}

function setGrads(e: Engine, store: ParamStore, grads: Float32Array[], scale: number): void {
  for (const p of store.params) {
    e.upload(p.tensor.grad!, grads[Number(p.name.slice(1))].map((g) => g * scale));
  }
}

gpuTest("scaler: scaled gradients give the fp32 update bit for bit; the scale grows", async (e) => {
  const rng = new Rng(5);
  const a = makeStore(e, 1), b = makeStore(e, 1);
  const clipA = new GradClip(a.store, 1.0);
  const scaler = new LossScaler(e, { growthInterval: 2 });
  const clipB = new GradClip(b.store, 1.0, scaler);
  for (let step = 0; step < 3; step++) {
    // grads large enough that clipping is active on some steps
    const g = SIZES.map((n) => Float32Array.from(rng.randn(n, step === 1 ? 0.2 : 0.01)));
    const S = (await scaler.read()).scale;
    assertEquals(S, step < 2 ? 65536 : 131072); // doubled after 2 clean steps
    setGrads(e, a.store, g, 1);
    setGrads(e, b.store, g, S);
    clipA.compute();
    a.adam.step(1e-3, { clip: clipA });
    clipB.compute();
    b.adam.step(1e-3, { clip: clipB });
    const [ra, rb] = [await clipA.read(), await clipB.read()];
    assertEquals(rb.norm, ra.norm); // unscaled norm
    assertEquals(rb.skip, false);
    assertEquals(await snapshot(b.store, b.adam), await snapshot(a.store, a.adam));
  }
  assertEquals(await scaler.read(), {
    scale: 131072,
    growth_tracker: 1,
    skipped_steps: 0,
    consecutive_skipped: 0,
  });
  for (const x of [clipA, clipB, scaler, a.adam, b.adam]) x.destroy();
  a.store.destroy();
  b.store.destroy();
});

gpuTest(
  "scaler: Inf/NaN gradients or the found-inf word skip the step and halve the scale",
  async (e) => {
    const rng = new Rng(6);
    const { store, adam } = makeStore(e, 2);
    const scaler = new LossScaler(e, { initScale: 1024, growthInterval: 2000 });
    const clip = new GradClip(store, Infinity, scaler);
    const before = await snapshot(store, adam);
    const g = SIZES.map((n) => Float32Array.from(rng.randn(n, 0.01)));
    // 1. an Inf in one gradient
    g[3][7] = Infinity;
    setGrads(e, store, g, 1024);
    clip.compute();
    adam.step(1e-3, { clip });
    assertEquals((await clip.read()).skip, true);
    assertEquals(await snapshot(store, adam), before);
    assertEquals(await scaler.read(), {
      scale: 512,
      growth_tracker: 0,
      skipped_steps: 1,
      consecutive_skipped: 1,
    });
    // 2. finite gradients, but a cast overflowed (the found-inf word)
    g[3][7] = 0.5;
    setGrads(e, store, g, 512);
    const w = new Uint32Array(await e.read(scaler.state));
    w[SCALER.foundInf] = 1;
    e.upload(scaler.state, w);
    clip.compute();
    adam.step(1e-3, { clip });
    assertEquals(await snapshot(store, adam), before);
    assertEquals((await scaler.read()).consecutive_skipped, 2);
    assertEquals((await e.read(scaler.state))[SCALER.foundInf], 0); // cleared by the finish
    // 3. a NaN
    g[0][0] = NaN;
    setGrads(e, store, g, 256);
    clip.compute();
    adam.step(1e-3, { clip });
    assertEquals(Number.isNaN((await clip.read()).norm), true);
    assertEquals(await snapshot(store, adam), before);
    // 4. a clean step updates, resets the run of skips, keeps the total
    g[0][0] = 0.1;
    setGrads(e, store, g, 128);
    clip.compute();
    adam.step(1e-3, { clip });
    assertEquals((await clip.read()).skip, false);
    assertEquals((await snapshot(store, adam)).join() === before.join(), false);
    assertEquals(await scaler.read(), {
      scale: 128,
      growth_tracker: 1,
      skipped_steps: 3,
      consecutive_skipped: 0,
    });
    for (const x of [clip, scaler, adam]) x.destroy();
    store.destroy();
  },
);

gpuTest(
  "scaler: state round-trips (checkpoints); invalid settings and states are refused",
  async (e) => {
    const s = new LossScaler(e);
    const st = { scale: 2 ** -3, growth_tracker: 17, skipped_steps: 4, consecutive_skipped: 2 };
    s.load(st);
    assertEquals(await s.read(), st);
    assertThrows(() => s.load({ ...st, scale: 0 }), /loss scaler state is invalid/);
    assertThrows(() => s.load({ ...st, growth_tracker: -1 }), /loss scaler state is invalid/);
    assertEquals(await s.read(), st);
    assertThrows(() => new LossScaler(e, { backoffFactor: 1 }), /out of range/);
    assertThrows(() => new LossScaler(e, { growthInterval: 0.5 }), /out of range/);
    s.destroy();
  },
);
