import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import type { Engine } from "../../tensor/engine.ts";
import { type ParamSpec, ParamStore } from "../../tensor/params.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import { AdamW } from "../../optim/adamw.ts";
import { type AdamHyper, adamwStepRef } from "../../optim/adamw_ref.ts";
import { moduleKindOf, paramGroup } from "../../optim/groups.ts";
import { constantSchedule, lrAt, scheduleFromConfig } from "../../optim/schedule.ts";
import {
  assertClose,
  fixtureManifest,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  Rng,
} from "../helpers.ts";

// Awkward sizes (1, 3, odd, just over/under the 64-element alignment and the 256-thread
// workgroup) in two groups, interleaved so that the store regroups them.
const SIZES: [string, number[]][] = [
  ["a.weight", [37, 29]],
  ["a.bias", [3]],
  ["b.weight", [65]],
  ["b.bias", [1]],
  ["c.weight", [4099]],
  ["c.bias", [255]],
  ["d.weight", [7, 9, 3]],
  ["e.weight", [1000]],
  ["e.bias", [257]],
  ["f.weight", [63]],
];
const WD = 0.1;
const HP: AdamHyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: WD };

function makeStore(e: Engine, rng: Rng, maxChunkElements: number) {
  const specs: ParamSpec[] = SIZES.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return {
      name,
      shape,
      group: name.endsWith("bias") ? "no_decay" : "decay",
      init: Float32Array.from(rng.randn(n, 0.5)),
    };
  });
  const store = new ParamStore(e, specs, ["decay", "no_decay"], { maxChunkElements });
  return { store, specs };
}

/** Gradients of one step: normal with a per-tensor scale, some exact zeros, one tiny tensor. */
function randomGrads(rng: Rng, specs: ParamSpec[], step: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  specs.forEach((s, k) => {
    const scale = k === 3 ? 1e-7 : 10 ** ((k % 4) - 2); // 1e-2 .. 10, and ~eps-sized for b.bias
    const g = Float32Array.from(rng.randn(s.init.length, scale));
    for (let i = step % 5; i < g.length; i += 11) g[i] = 0;
    out.set(s.name, g);
  });
  return out;
}

function uploadGrads(e: Engine, store: ParamStore, grads: Map<string, Float32Array>): void {
  for (const p of store.params) e.upload(p.tensor.grad!, grads.get(p.name)!);
}

gpuTest("adamw: 5 steps over several chunks and two groups vs float64 reference", async (e) => {
  const rng = new Rng(11);
  const { store, specs } = makeStore(e, rng, 4480);
  const chunks = new Set(store.params.map((p) => p.chunk)).size;
  if (chunks < 3) throw new Error(`expected several chunks, got ${chunks}`);
  // both groups share at least one chunk (segments are per group and chunk)
  assertEquals(store.segments.length > chunks, true);
  const adam = new AdamW(store, { decay: { weightDecay: WD }, no_decay: { weightDecay: 0 } }, {
    lr: HP.lr,
    betas: [HP.beta1, HP.beta2],
    eps: HP.eps,
  });
  const ref = new Map(specs.map((s) => [s.name, {
    p: Float64Array.from(s.init),
    m: new Float64Array(s.init.length),
    v: new Float64Array(s.init.length),
    wd: s.group === "decay" ? WD : 0,
  }]));
  // a warmup-like schedule so that lr changes every step
  const sched = scheduleFromConfig({ t_initial: 10, warmup_t: 3, warmup_lr_init: 1e-4 }, 2e-3);
  for (let step = 1; step <= 5; step++) {
    const grads = randomGrads(rng, specs, step);
    uploadGrads(e, store, grads);
    const lr = lrAt(step - 1, sched);
    const d0 = e.dispatches, s0 = e.submits;
    adam.step(lr);
    // one dispatch per segment, recorded only: nothing submitted, nothing read back
    assertEquals(e.dispatches - d0, store.segments.length);
    assertEquals(e.submits, s0);
    for (const [name, r] of ref) {
      adamwStepRef(r.p, grads.get(name)!, r.m, r.v, { ...HP, lr, weightDecay: r.wd }, step);
    }
  }
  assertEquals(adam.stepCount, 5);
  const values = await store.read("values");
  const st = await adam.state();
  assertEquals(st.step, 5);
  for (const [name, r] of ref) {
    // f32 vs f64 after 5 steps (inputs exactly representable in f32).
    // v = β2·v + (1−β2)·g² has no cancellation: ~3 roundings of 2^-24 per step, 5 steps ->
    // ≤ 1e-6 relative (observed ≤ 2.5e-7). m = β1·m + (1−β1)·g can cancel to ~0, so its error
    // is bounded relative to the tensor's scale of m: 5e-7·max|m| + 5e-7·|m| (observed ≤ 1e-7).
    // p: each step rounds p to f32 (≤ 0.5 ulp = 3e-8 relative) and adds lr·update whose f32
    // error is ~1e-6 relative of an O(1) quantity (m̂/(√v̂+eps), sqrt and divides ≤ 2.5 ulp each):
    // |err| ≲ 5·(3e-8·|p| + 2e-3·1e-6) -> atol 2e-8 + rtol 5e-7 (observed ≤ 40% of it).
    const maxM = r.m.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    assertClose(`${name} p`, values.get(name)!, r.p, { atol: 2e-8, rtol: 5e-7 });
    assertClose(`${name} m`, st.m.get(name)!, r.m, { atol: 5e-7 * maxM + 1e-30, rtol: 5e-7 });
    assertClose(`${name} v`, st.v.get(name)!, r.v, { atol: 1e-30, rtol: 1e-6 });
  }
  adam.destroy();
  store.destroy();
});

gpuTest("adamw: state() / loadState() round trip (both forms) and argument checks", async (e) => {
  const rng = new Rng(12);
  const { store, specs } = makeStore(e, rng, 8192);
  const groups = { decay: { weightDecay: WD }, no_decay: { weightDecay: 0 } };
  const hp = { lr: 1e-3, betas: [0.9, 0.95] as [number, number], eps: 1e-8 };
  const adam = new AdamW(store, groups, hp);
  for (let s = 1; s <= 2; s++) {
    uploadGrads(e, store, randomGrads(rng, specs, s));
    adam.step(lrAt(s - 1, constantSchedule(1e-3)));
  }
  const st = await adam.state();
  const b = new AdamW(store, groups, hp);
  b.loadState(st);
  const st2 = await b.state();
  assertEquals(st2.step, 2);
  for (const p of store.params) {
    assertEquals(st2.m.get(p.name), st.m.get(p.name));
    assertEquals(st2.v.get(p.name), st.v.get(p.name));
  }
  // the checkpoint form: exp_avg.<name> / exp_avg_sq.<name> + {step}
  const flat = new Map<string, Float32Array>();
  for (const [n, v] of st.m) flat.set(`exp_avg.${n}`, v);
  for (const [n, v] of st.v) flat.set(`exp_avg_sq.${n}`, v);
  const c = new AdamW(store, groups, hp);
  c.loadState(flat, { step: st.step });
  const st3 = await c.state();
  assertEquals(st3.step, 2);
  for (const p of store.params) assertEquals(st3.v.get(p.name), st.v.get(p.name));
  flat.delete(`exp_avg_sq.${store.params[1].name}`);
  assertThrows(() => c.loadState(flat, { step: 2 }), /no exp_avg_sq/);
  assertThrows(() => new AdamW(store, { decay: { weightDecay: WD } }, hp), /no_decay/);
  assertThrows(() => adam.step(NaN), /learning rate/);
  for (const x of [adam, b, c]) x.destroy();
  store.destroy();
});

fixtureTest(
  "adamw: step 1 on the tiny model matches model_adamw.safetensors step1.*",
  async (e) => {
    const info = fixtureManifest().info.model;
    const init = await readSafetensors(`${FIXTURES}/model_params_init.safetensors`);
    const grads = await readSafetensors(`${FIXTURES}/model_grads.safetensors`);
    const after = await readSafetensors(`${FIXTURES}/model_adamw.safetensors`);
    const names = info.param_order as string[];
    const grouping = { bias_weight_decay: false, normalization_weight_decay: false };
    const specs: ParamSpec[] = names.map((n) => ({
      name: n,
      shape: init.tensors.get(n)!.shape,
      group: paramGroup(n, moduleKindOf(n), grouping),
      init: tensorData(init, n) as Float32Array,
    }));
    // the fixture's groups (manifest info.model.param_groups) are ours
    const refGroups = info.param_groups as { weight_decay: number; params: string[] }[];
    for (const s of specs) {
      const wd = refGroups.find((g) => g.params.includes(s.name))!.weight_decay;
      assertEquals(s.group, wd > 0 ? "decay" : "no_decay");
    }
    // force several chunks (the embedding, 32,256 values, is the largest tensor)
    const store = new ParamStore(e, specs, ["decay", "no_decay"], { maxChunkElements: 40_000 });
    if (store.values.length < 3) throw new Error("expected several chunks");
    for (const p of store.params) {
      e.upload(p.tensor.grad!, tensorData(grads, `grad.${p.name}`));
    }
    const opt = info.optimizer as { lr: number; betas: [number, number]; eps: number };
    const wdOf = (g: number) => refGroups[g].weight_decay;
    const adam = new AdamW(store, {
      decay: { weightDecay: wdOf(0) },
      no_decay: { weightDecay: wdOf(1) },
    }, { lr: opt.lr, betas: opt.betas, eps: opt.eps });
    adam.step(opt.lr); // no clipping
    const values = await store.read("values");
    for (const n of names) {
      // the fixture's own tolerance (manifest tolerance_rule: params after AdamW steps:
      // atol ≥ 1e-3·lr, rel_l2 ≥ 1e-5, rtol 1e-4 — an f32 AdamW step is within these)
      assertClose(
        `step1.${n}`,
        values.get(n)!,
        tensorData(after, `step1.${n}`),
        fixtureTol(`step1.${n}`),
      );
    }
    adam.destroy();
    store.destroy();
  },
);
