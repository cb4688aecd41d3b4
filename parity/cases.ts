/**
 * The parity cases: each runs our op, module or model on a fixture's inputs
 * and compares what the fixture expects (parity.ts picks the cases a folder
 * has tensors for).
 */
import type { Engine } from "../tensor/engine.ts";
import { ParamStore } from "../tensor/params.ts";
import { backward, clearTape, noGrad } from "../tensor/tape.ts";
import { type Tensor, tidy } from "../tensor/tensor.ts";
import { type MixerConfig, modelConfigFromCfg, withView } from "../model/config.ts";
import { BasedLM } from "../model/based.ts";
import { BasedError } from "../errors.ts";
import { declareParams } from "../model/params.ts";
import {
  linearAttention,
  linearAttentionForward,
  type LinearAttentionView,
  taylorFeatureMap,
} from "../kernels/linear_attention/mod.ts";
import { slidingWindowAttention } from "../kernels/sliding_window.ts";
import { rotaryQK } from "../kernels/rotary.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import {
  type CaseResult,
  CaseRun,
  disposeAll,
  type Fixtures,
  leaf,
  readGrad,
  swap12,
} from "./fixtures.ts";

export async function linearAttentionCase(
  e: Engine,
  fx: Fixtures,
  prefix: string,
  view: LinearAttentionView,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const sq = fx.shape(`${prefix}.q`), sv = fx.shape(`${prefix}.v`);
  const [B, H, L, F] = sq, D = sv[3];
  const q = leaf(e, swap12(fx.data(`${prefix}.q`), sq), [B, L, H, F]);
  const k = leaf(e, swap12(fx.data(`${prefix}.k`), sq), [B, L, H, F]);
  const v = leaf(e, swap12(fx.data(`${prefix}.v`), sv), [B, L, H, D]);
  const dy = e.tensor(swap12(fx.data(`${prefix}.dy`), sv), [B, L, H, D]);
  const y = tidy(() => linearAttention(q, k, v, { view, eps: 1e-12, featureDim: F }));
  backward(y, dy);
  run.check(`${prefix}.y`, swap12(await e.readF32(y), [B, L, H, D]));
  run.check(`${prefix}.dq`, swap12(await readGrad(q), [B, L, H, F]));
  run.check(`${prefix}.dk`, swap12(await readGrad(k), [B, L, H, F]));
  run.check(`${prefix}.dv`, swap12(await readGrad(v), [B, L, H, D]));
  if (fx.has(`${prefix}.num`)) {
    // the numerator alone (use_normalize=False) and its gradients, same dy
    for (const t of [q, k, v]) {
      t.grad?.dispose();
      t.grad = null;
    }
    const num = tidy(() => linearAttention(q, k, v, { view, featureDim: F, normalize: false }));
    backward(num, dy);
    run.check(`${prefix}.num`, swap12(await e.readF32(num), [B, L, H, D]));
    run.check(`${prefix}.num_dq`, swap12(await readGrad(q), [B, L, H, F]));
    run.check(`${prefix}.num_dk`, swap12(await readGrad(k), [B, L, H, F]));
    run.check(`${prefix}.num_dv`, swap12(await readGrad(v), [B, L, H, D]));
    num.dispose();
  }
  if (fx.has(`${prefix}.den`)) {
    // the normaliser (without ε), [B, L, H] -> (B, H, L)
    const { y: y2, den } = noGrad(() =>
      linearAttentionForward(q, k, v, { view, eps: 1e-12, featureDim: F })
    );
    run.check(`${prefix}.den`, swap12(await e.readF32(den), [B, L, H, 1]));
    y2.dispose();
    den.dispose();
  }
  disposeAll([q, k, v, dy, y]);
  return run.result(`linear attention ${prefix} [${view}]`);
}

export async function featureMapCase(
  e: Engine,
  fx: Fixtures,
  prefix: string,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  for (const which of ["q", "k"]) {
    const name = `${prefix}.phi_${which}`;
    if (!fx.has(name)) continue;
    const s = fx.shape(`${prefix}.${which}`);
    const x = e.tensor(fx.data(`${prefix}.${which}`), s);
    x.requiresGrad = true;
    const phi = tidy(() => taylorFeatureMap(x));
    run.check(name, await e.readF32(phi));
    // φ's backward: the feature-space gradient of the causal dot product (cdp_dQ / cdp_dK)
    // pulled back through φ gives the numerator's gradient (num_dq / num_dk)
    const cdp = `${prefix}.cdp_d${which.toUpperCase()}`;
    if (fx.has(cdp) && fx.has(`${prefix}.num_d${which}`)) {
      const g = e.tensor(fx.data(cdp), fx.shape(cdp));
      backward(phi, g);
      run.check(`${prefix}.num_d${which}`, await readGrad(x));
      g.dispose();
    } else clearTape();
    disposeAll([x, phi]);
  }
  return run.result(
    `taylor feature map ${prefix} (forward, and backward of the causal-dot-product gradients)`,
  );
}

export async function slidingCoreCase(
  e: Engine,
  fx: Fixtures,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const info = fx.manifest.info.sliding_window ?? {};
  const s = fx.shape("swa.qkv");
  const [B, L, , H, Dh] = s;
  const window = Number(info.window_size ?? 2 * L);
  const scale = Number(info.softmax_scale ?? Dh ** -0.5);
  const base = Number(info.rotary_base ?? 10000);
  const rotaryDim = Number(info.rotary_dim ?? Dh);
  const qkv = leaf(e, fx.data("swa.qkv"), s);
  const dout = e.tensor(fx.data("swa.dout"), [B, L, H, Dh]);
  const [rot, out] = tidy(() => {
    const rot = rotaryQK(qkv, { base, rotaryDim });
    return [rot, slidingWindowAttention(rot, { window, scale })];
  });
  const r = await e.readF32(rot);
  const n = B * L, part = H * Dh;
  const qr = new Float32Array(n * part), kr = new Float32Array(n * part);
  for (let t = 0; t < n; t++) {
    qr.set(r.subarray(t * 3 * part, t * 3 * part + part), t * part);
    kr.set(r.subarray(t * 3 * part + part, t * 3 * part + 2 * part), t * part);
  }
  run.check("swa.q_rot", qr);
  run.check("swa.k_rot", kr);
  backward(out, dout);
  run.check("swa.out", await e.readF32(out));
  run.check("swa.dqkv", await readGrad(qkv));
  clearTape();
  disposeAll([qkv, dout, rot, out]);
  return run.result("sliding window attention + rotary (core)");
}

export async function moduleCase(
  e: Engine,
  fx: Fixtures,
  prefix: string,
  weights: string[],
  build: (w: (n: string) => Tensor, x: Tensor) => Tensor,
  extra: (run: CaseRun, w: (n: string) => Tensor, x: Tensor) => Promise<void>,
  title: string,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const params = new Map<string, Tensor>();
  for (const n of weights) {
    if (fx.has(`${prefix}.${n}`)) {
      params.set(n, leaf(e, fx.data(`${prefix}.${n}`), fx.shape(`${prefix}.${n}`)));
    }
  }
  const w = (n: string) => {
    const t = params.get(n);
    if (!t) throw new BasedError(`fixture has no '${prefix}.${n}'`);
    return t;
  };
  const x = leaf(e, fx.data(`${prefix}.x`), fx.shape(`${prefix}.x`));
  const dy = e.tensor(fx.data(`${prefix}.dy`), fx.shape(`${prefix}.dy`));
  const y = tidy(() => build(w, x));
  await extra(run, w, x);
  backward(y, dy);
  run.check(`${prefix}.y`, await e.readF32(y));
  run.check(`${prefix}.dx`, await readGrad(x));
  for (const [n, t] of params) run.check(`${prefix}.grad.${n}`, await readGrad(t));
  disposeAll([x, dy, y, ...params.values()]);
  return run.result(title);
}

/** A module case's mixer: the fixture's values, the rest unused by that module. */
export function mixerCfg(kind: MixerConfig["kind"], o: Partial<MixerConfig>): MixerConfig {
  return {
    section: "mixer",
    kind,
    expandProj: 2,
    useBias: true,
    kernelSize: 3,
    featureDim: 16,
    numHeads: 1,
    headDim: 1,
    eps: 1e-12,
    view: "quadratic",
    window: Infinity,
    ...o,
  };
}

function groupsFromManifest(
  fx: Fixtures,
): { groupOf: (n: string) => string; wd: Record<string, number> } {
  const groups = (fx.manifest.info.model?.param_groups ?? []) as {
    weight_decay: number;
    params: string[];
  }[];
  const byName = new Map<string, string>();
  const wd: Record<string, number> = {};
  groups.forEach((g, i) => {
    wd[`g${i}`] = g.weight_decay;
    for (const p of g.params) byName.set(p, `g${i}`);
  });
  if (!groups.length) wd.g0 = 0;
  return { groupOf: (n) => byName.get(n) ?? "g0", wd };
}

function buildModel(
  e: Engine,
  fx: Fixtures,
  view?: LinearAttentionView,
): { model: BasedLM; wd: Record<string, number> } {
  const info = fx.manifest.info.model ?? {};
  const yamlKeys = info.config_yaml_keys as
    | { model?: { config?: Record<string, unknown> } }
    | undefined;
  const configured = modelConfigFromCfg({ ...(yamlKeys?.model?.config ?? {}) });
  // the fixtures' linear attention ran in each view with ε = 1e-12
  const config = view ? withView(configured, view, 1e-12) : configured;
  const { groupOf, wd } = groupsFromManifest(fx);
  const specs = declareParams(config).map((d) => ({
    name: d.name,
    shape: d.shape,
    group: groupOf(d.name),
    init: fx.data(d.name),
  }));
  const store = new ParamStore(e, specs, Object.keys(wd));
  return { model: new BasedLM(e, config, store), wd };
}

function modelBatch(e: Engine, fx: Fixtures) {
  const ids = fx.ints("input_ids"), labels = fx.ints("labels");
  const [B, L] = fx.shape("input_ids");
  return {
    ids: e.tensor(ids, [B, L], "i32"),
    hostIds: ids,
    labels: e.tensor(labels, [B, L], "i32"),
    B,
    L,
  };
}

export async function modelCase(
  e: Engine,
  fx: Fixtures,
  view: LinearAttentionView,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const { model } = buildModel(e, fx, view);
  const batch = modelBatch(e, fx);
  const T = batch.B * batch.L;
  // logits and activations (no gradient)
  model.trace = new Map();
  const logits = tidy(() => model.logits(batch));
  run.check("logits", await e.readF32(logits));
  for (const [n, t] of model.trace) run.check(`act.${n}`, await e.readF32(t));
  model.clearTrace();
  model.trace = null;
  clearTape();
  // loss and gradients
  model.store.zeroGrads();
  const loss = tidy(() => model.loss(batch, { gradScale: 1 / T }));
  backward(loss);
  run.check("loss", await e.readF32(loss));
  const grads = await model.store.read("grads");
  for (const [n, g] of grads) run.check(`grad.${n}`, g);
  disposeAll([logits, loss, batch.ids, batch.labels]);
  model.store.destroy();
  return run.result(`model [${view}] logits, loss, activations, gradients`);
}

export async function adamwCase(
  e: Engine,
  fx: Fixtures,
  clip: boolean,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const pre = clip ? "clip." : "";
  const { model, wd } = buildModel(e, fx);
  const opt = (fx.manifest.info.model?.optimizer ?? {}) as {
    lr?: number;
    betas?: [number, number];
    eps?: number;
  };
  const groups: Record<string, { weightDecay: number }> = {};
  for (const [g, w] of Object.entries(wd)) groups[g] = { weightDecay: w };
  const adam = new AdamW(model.store, groups, {
    lr: opt.lr ?? 1e-3,
    betas: opt.betas ?? [0.9, 0.95],
    eps: opt.eps ?? 1e-8,
  });
  const clipper = clip ? new GradClip(model.store, 1.0) : new GradClip(model.store, Infinity);
  const batch = modelBatch(e, fx);
  const T = batch.B * batch.L;
  const losses: number[] = [], norms: number[] = [];
  for (let step = 1; step <= 4; step++) {
    model.store.zeroGrads();
    const loss = tidy(() => model.loss(batch, { gradScale: 1 / T }));
    if (step === 4) {
      clearTape();
      losses.push((await e.readF32(loss))[0]);
      loss.dispose();
      break;
    }
    backward(loss);
    losses.push((await e.readF32(loss))[0]);
    loss.dispose();
    clipper.compute();
    norms.push(await clipper.readNorm());
    adam.step(opt.lr ?? 1e-3, { clip: clipper });
    if (step === 1 || step === 3) {
      const vals = await model.store.read("values");
      for (const [n, v] of vals) run.check(`${pre}step${step}.${n}`, v);
    }
  }
  run.check(`${pre}losses`, losses);
  run.check(`${pre}grad_norms`, norms);
  disposeAll([batch.ids, batch.labels]);
  adam.destroy?.();
  model.store.destroy();
  return run.result(`AdamW 3 steps${clip ? " with clip_grad_norm 1.0" : ""}`);
}
