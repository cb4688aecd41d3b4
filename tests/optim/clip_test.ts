import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import type { Engine } from "../../tensor/engine.ts";
import { type ParamSpec, ParamStore } from "../../tensor/params.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import { AdamW } from "../../optim/adamw.ts";
import { adamwStepRef, clipCoefRef, globalNormRef } from "../../optim/adamw_ref.ts";
import { CTL, GradClip } from "../../optim/clip.ts";
import {
  assertClose,
  fixtureManifest,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  Rng,
} from "../helpers.ts";

// awkward sizes; with maxChunkElements 3008 the store has several chunks, one of them
// larger than one workgroup's share so that stage 1 uses several workgroups per chunk
const SIZES = [2999, 1, 77, 1025, 64, 2048, 5, 513, 2600];
const HP = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

function makeStore(e: Engine, rng: Rng, maxChunkElements = 3008) {
  const specs: ParamSpec[] = SIZES.map((n, i) => ({
    name: `p${i}`,
    shape: [n],
    group: i % 3 === 1 ? "no_decay" : "decay",
    init: Float32Array.from(rng.randn(n, 0.3)),
  }));
  const store = new ParamStore(e, specs, ["decay", "no_decay"], { maxChunkElements });
  const adam = new AdamW(store, { decay: { weightDecay: 0.1 }, no_decay: { weightDecay: 0 } }, {
    lr: HP.lr,
    betas: [HP.beta1, HP.beta2],
    eps: HP.eps,
  });
  return { store, specs, adam };
}

function setGrads(e: Engine, store: ParamStore, grads: Map<string, Float32Array>): void {
  for (const p of store.params) e.upload(p.tensor.grad!, grads.get(p.name)!);
}

function randomGrads(rng: Rng, specs: ParamSpec[], std = 1): Map<string, Float32Array> {
  return new Map(specs.map((s) => [s.name, Float32Array.from(rng.randn(s.init.length, std))]));
}

/** The f32 bits of everything the optimizer owns: values and both moments. */
async function snapshot(store: ParamStore, adam: AdamW): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  const vals = await store.read("values");
  const st = await adam.state();
  for (const p of store.params) {
    for (const [k, a] of [["p", vals], ["m", st.m], ["v", st.v]] as const) {
      out.set(`${k}.${p.name}`, [...new Uint32Array(a.get(p.name)!.slice().buffer)]);
    }
  }
  return out;
}

gpuTest("clip: global norm over all chunks vs float64, deterministic, coef applied", async (e) => {
  const rng = new Rng(21);
  const { store, specs, adam } = makeStore(e, rng);
  if (store.values.length < 4) {
    throw new Error(`expected several chunks, got ${store.values.length}`);
  }
  const grads = randomGrads(rng, specs, 0.7);
  setGrads(e, store, grads);
  const total = globalNormRef(grads.values());
  const maxNorm = 0.25 * total; // clipping active: coef ≈ 0.25
  const clip = new GradClip(store, maxNorm);
  const s0 = e.submits;
  clip.compute();
  assertEquals(e.submits, s0); // recorded only
  const r = await clip.read();
  // f32 sum of ~12k squares: per-thread sums of ≤ 2 terms + a 256-leaf tree + the final sum of
  // partials (≤ ~20 rounding steps of 2^-24 on a sum of positives) -> ≤ 1.2e-6 relative on the
  // sum, half of that on the norm; 1e-6 relative leaves headroom (sqrt adds ≤ 1 ulp)
  assertClose("norm", [r.norm], [total], { atol: 0, rtol: 1e-6 });
  assertClose("coef", [r.coef], [clipCoefRef(total, maxNorm)], { atol: 0, rtol: 2e-6 });
  assertEquals(r.skip, false);
  assertEquals(await clip.nonFinite(), false);
  // deterministic: a second computation gives the same bits
  const bits1 = [...new Uint32Array((await e.read(clip.ctl)).buffer)];
  clip.compute();
  const bits2 = [...new Uint32Array((await e.read(clip.ctl)).buffer)];
  assertEquals(bits2, bits1);
  // AdamW multiplies g by coef when it reads it
  adam.step(HP.lr, { clip });
  const vals = await store.read("values");
  const st = await adam.state();
  for (const s of specs) {
    const p = Float64Array.from(s.init),
      m = new Float64Array(p.length),
      v = new Float64Array(p.length);
    const wd = s.group === "decay" ? 0.1 : 0;
    adamwStepRef(p, grads.get(s.name)!, m, v, { ...HP, weightDecay: wd }, 1, r.coef);
    // one step from exact inputs, coef taken from the GPU (its own error is checked above):
    // m and v carry 1-2 f32 roundings (≤ 2.4e-7 relative), p one rounding plus lr·(≤ 1e-6)
    assertClose(`${s.name} m`, st.m.get(s.name)!, m, { atol: 1e-12, rtol: 3e-7 });
    assertClose(`${s.name} v`, st.v.get(s.name)!, v, { atol: 1e-14, rtol: 3e-7 });
    assertClose(`${s.name} p`, vals.get(s.name)!, p, { atol: 2e-9, rtol: 2e-7 });
  }
  assertThrows(() => adam.step(HP.lr, { clip }), /clip.compute/); // a stale coef is refused
  assertThrows(() => new GradClip(store, 0), /max_norm > 0/);
  clip.destroy();
  adam.destroy();
  store.destroy();
});

gpuTest("clip: NaN / Inf / overflowing gradients skip the update and set the flag", async (e) => {
  const rng = new Rng(22);
  const { store, specs, adam } = makeStore(e, rng);
  const clip = new GradClip(store, 1.0);
  const cases: [string, (g: Map<string, Float32Array>) => void, (n: number) => boolean][] = [
    ["NaN", (g) => (g.get("p3")![1000] = NaN), Number.isNaN],
    ["-Inf", (g) => (g.get("p8")![17] = -Infinity), (n) => n === Infinity],
    ["NaN and Inf", (g) => {
      g.get("p2")![0] = Infinity;
      g.get("p7")![512] = NaN;
    }, Number.isNaN],
    // finite values whose squares overflow f32: the norm is +Inf (torch would give coef 0)
    ["overflow", (g) => g.get("p0")!.fill(3e19), (n) => n === Infinity],
  ];
  let skipped = 0;
  for (const [what, poison, normIs] of cases) {
    const grads = randomGrads(rng, specs);
    poison(grads);
    setGrads(e, store, grads);
    const before = await snapshot(store, adam);
    clip.compute();
    adam.step(HP.lr, { clip });
    const r = await clip.read();
    skipped++;
    assertEquals(r.skip, true, what);
    assertEquals(normIs(r.norm), true, `${what}: norm ${r.norm}`);
    assertEquals(r.nonFiniteSteps, skipped);
    assertEquals(await clip.nonFinite(), true);
    assertEquals(await adam.nonFinite(), true);
    // parameters and moments are bit-identical
    assertEquals(await snapshot(store, adam), before, what);
  }
  // finite gradients again: the update happens, the flag stays up until reset
  setGrads(e, store, randomGrads(rng, specs));
  const before = await snapshot(store, adam);
  clip.compute();
  adam.step(HP.lr, { clip });
  assertEquals((await clip.read()).skip, false);
  assertEquals((await snapshot(store, adam)).get("p.p0") !== before.get("p.p0"), true);
  assertEquals(await clip.nonFinite(), true);
  clip.resetNonFinite();
  assertEquals(await clip.nonFinite(), false);
  assertEquals(await adam.nonFinite(), false);
  assertEquals(CTL.words, 8);
  clip.destroy();
  adam.destroy();
  store.destroy();
});

gpuTest("clip: disabled (maxNorm Infinity) keeps coef 1; AdamW alone flags NaN", async (e) => {
  const rng = new Rng(23);
  const { store, specs, adam } = makeStore(e, rng);
  const grads = randomGrads(rng, specs, 5);
  setGrads(e, store, grads);
  const off = new GradClip(store, Infinity);
  off.compute();
  const r = await off.read();
  assertEquals(r.coef, 1);
  assertClose("norm", [r.norm], [globalNormRef(grads.values())], { atol: 0, rtol: 1e-6 });
  // a GradClip with max_norm ≥ the norm also leaves coef at exactly 1 (torch clamps at 1)
  const loose = new GradClip(store, 1e6);
  loose.compute();
  assertEquals((await loose.read()).coef, 1);
  // without a GradClip, AdamW detects non-finite gradient elements (and cannot skip)
  adam.step(HP.lr);
  assertEquals(await adam.nonFinite(), false);
  grads.get("p5")![7] = NaN;
  setGrads(e, store, grads);
  adam.step(HP.lr);
  assertEquals(await adam.nonFinite(), true);
  adam.resetNonFinite();
  assertEquals(await adam.nonFinite(), false);
  for (const x of [off, loose, adam, store]) x.destroy();
});

fixtureTest(
  "clip: norm of the tiny model's gradients matches model_adamw grad_norms[0]",
  async (e) => {
    const init = await readSafetensors(`${FIXTURES}/model_params_init.safetensors`);
    const grads = await readSafetensors(`${FIXTURES}/model_grads.safetensors`);
    const adamw = await readSafetensors(`${FIXTURES}/model_adamw.safetensors`);
    const names = fixtureManifest().info.model.param_order as string[];
    const specs: ParamSpec[] = names.map((n, i) => ({
      name: n,
      shape: init.tensors.get(n)!.shape,
      group: i % 2 ? "b" : "a",
      init: tensorData(init, n) as Float32Array,
    }));
    const store = new ParamStore(e, specs, ["a", "b"], { maxChunkElements: 50_000 });
    for (const p of store.params) e.upload(p.tensor.grad!, tensorData(grads, `grad.${p.name}`));
    const clip = new GradClip(store, 1.0);
    clip.compute();
    const r = await clip.read();
    // grad_norms[0] is the norm before step 1 (the same gradients); the fixture's tolerance
    for (const key of ["grad_norms", "clip.grad_norms"]) {
      const ref = (tensorData(adamw, key) as Float32Array)[0];
      assertClose(key, [r.norm], [ref], fixtureTol(key));
    }
    // the fixture's norm is > 1, so clipping is active: coef = 1/(norm + 1e-6)
    assertClose("coef", [r.coef], [clipCoefRef(r.norm, 1.0)], { atol: 0, rtol: 3e-7 });
    clip.destroy();
    store.destroy();
  },
);

gpuTest(
  "clip + adamw: one large chunk (several stage-1 workgroups), other vec4s per thread",
  async (e) => {
    const rng = new Rng(24);
    const sizes = [70_001, 33, 9_000];
    const specs: ParamSpec[] = sizes.map((n, i) => ({
      name: `q${i}`,
      shape: [n],
      group: i === 1 ? "no_decay" : "decay",
      init: Float32Array.from(rng.randn(n, 0.3)),
    }));
    const store = new ParamStore(e, specs, ["decay", "no_decay"]);
    assertEquals(store.values.length, 1);
    const grads = randomGrads(rng, specs, 0.01);
    setGrads(e, store, grads);
    const total = globalNormRef(grads.values());
    const clip = new GradClip(store, 0.5 * total);
    clip.compute();
    const r = await clip.read();
    // ~80k squares: per-thread sums of ≤ 40 terms + 256-leaf tree + ~10 partials: ≤ ~60 roundings
    // of 2^-24 in the worst case (3.6e-6 on the sum, 1.8e-6 on the norm); random rounding errors
    // stay well below: 2e-6
    assertClose("norm", [r.norm], [total], { atol: 0, rtol: 2e-6 });
    for (const items of [1, 3]) {
      const adam = new AdamW(store, { decay: { weightDecay: 0.1 }, no_decay: { weightDecay: 0 } }, {
        lr: HP.lr,
        betas: [HP.beta1, HP.beta2],
        eps: HP.eps,
      }, { itemsPerThread: items });
      const before = await store.read("values");
      clip.compute();
      adam.step(HP.lr, { clip });
      const vals = await store.read("values");
      for (const s of specs) {
        const p = Float64Array.from(before.get(s.name)!);
        const m = new Float64Array(p.length), v = new Float64Array(p.length);
        const wd = s.group === "decay" ? 0.1 : 0;
        adamwStepRef(p, grads.get(s.name)!, m, v, { ...HP, weightDecay: wd }, 1, r.coef);
        // one step from exact inputs (as in the first clip test)
        assertClose(`${s.name} p (${items}/thread)`, vals.get(s.name)!, p, {
          atol: 2e-9,
          rtol: 2e-7,
        });
      }
      adam.destroy();
    }
    clip.destroy();
    store.destroy();
  },
);
