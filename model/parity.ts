/**
 * `based parity DIR`: runs every case a fixture folder describes (a
 * manifest.json plus safetensors files in the format of the reference
 * fixtures) and compares with the manifest's tolerances: linear attention
 * kernels in each training view, sliding-window attention with rotary,
 * BaseConv, the three mixers as modules, the full model (logits, loss, every
 * activation and parameter gradient) in each view, and AdamW steps. Shapes
 * and hyper-parameters come from the manifest, never from constants here.
 */
import { join } from "node:path";
import type { Engine } from "../tensor/engine.ts";
import { BasedError } from "../tensor/errors.ts";
import { parseSafetensors, type SafeFile, tensorData } from "../tensor/safetensors.ts";
import { backward, clearTape, noGrad } from "../tensor/tape.ts";
import { type Tensor, tidy } from "../tensor/tensor.ts";
import { ParamStore } from "../tensor/params.ts";
import { type MixerConfig, modelConfigFromCfg } from "./config.ts";
import { BasedLM, EMBEDDING } from "./based.ts";
import { baseConv, linearAttentionMixer, slidingMixer } from "./mixers.ts";
import { declareParams } from "./params.ts";
import {
  linearAttention,
  linearAttentionForward,
  type LinearAttentionView,
  taylorFeatureMap,
} from "../kernels/linear_attention/mod.ts";
import { slidingWindowAttention } from "../kernels/sliding_window.ts";
import { rotaryQK } from "../kernels/rotary.ts";
import { causalConv1d } from "../kernels/conv1d.ts";
import { linear } from "../kernels/matmul/mod.ts";
import { split } from "../kernels/layout.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import { adamDriftBound, f16Tolerance, ParityF16 } from "./parity_f16.ts";

/** Set while a `--precision 16-mixed` run is in progress (parity_f16.ts). */
let f16: ParityF16 | null = null;

export const VIEWS: LinearAttentionView[] = ["quadratic", "chunked", "cumsum"];

interface Tolerance {
  atol: number;
  rtol: number;
  rel_l2: number;
}

interface ManifestTensor {
  file: string;
  shape: number[];
  dtype: string;
  tolerance: Tolerance | string;
  meaning?: string;
}

interface Manifest {
  files: Record<string, unknown>;
  info: Record<string, Record<string, unknown>>;
  tensors: Record<string, ManifestTensor>;
}

export interface CaseResult {
  name: string;
  status: "pass" | "fail" | "skip";
  /** tensors compared */
  tensors: number;
  /** max over tensors of max|got-ref| / max|ref| */
  maxRelErr: number;
  /** max over tensors of ||got-ref|| / ||ref|| */
  relL2: number;
  /** the tensor with the largest error relative to its tolerance, and that ratio */
  worst: string;
  worstRatio: number;
  note?: string;
}

interface Comparison {
  name: string;
  ok: boolean;
  maxRelErr: number;
  relL2: number;
  /** max over elements of |d| / (atol + rtol|ref|), and rel_l2 / bound */
  ratio: number;
  msg?: string;
}

/** The manifest's pass rule: |d| ≤ atol + rtol·|ref| everywhere and ‖d‖/‖ref‖ ≤ rel_l2. */
export function compareTensor(
  name: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: Tolerance,
): Comparison {
  if (got.length !== ref.length) {
    return {
      name,
      ok: false,
      maxRelErr: Infinity,
      relL2: Infinity,
      ratio: Infinity,
      msg: `${got.length} values, expected ${ref.length}`,
    };
  }
  let maxD = 0, maxRef = 0, num = 0, den = 0, ratio = 0, bad = -1;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    const r = Math.abs(ref[i]);
    if (!(d <= maxD)) maxD = Number.isNaN(d) ? Infinity : d;
    if (r > maxRef) maxRef = r;
    num += d * d;
    den += r * r;
    const q = d / (tol.atol + tol.rtol * r);
    if (!(q <= ratio)) {
      ratio = Number.isNaN(q) ? Infinity : q;
      if (ratio > 1 && bad < 0) bad = i;
    }
  }
  const relL2 = Math.sqrt(num / Math.max(den, 1e-300));
  const l2ratio = relL2 / tol.rel_l2;
  const ok = ratio <= 1 && l2ratio <= 1;
  return {
    name,
    ok,
    maxRelErr: maxD / Math.max(maxRef, 1e-30),
    relL2,
    ratio: Math.max(ratio, l2ratio),
    msg: ok
      ? undefined
      : bad >= 0
      ? `${name}[${bad}] = ${got[bad]}, expected ${ref[bad]}`
      : `${name}: rel. L2 ${relL2.toExponential(2)} > ${tol.rel_l2}`,
  };
}

class Fixtures {
  #files = new Map<string, SafeFile>();
  constructor(readonly dir: string, readonly manifest: Manifest) {}

  static async open(dir: string): Promise<Fixtures> {
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, "manifest.json"));
    } catch {
      throw new BasedError(
        `${dir}: no manifest.json`,
        "give a folder in the fixture format (manifest.json + safetensors)",
      );
    }
    let m: Manifest;
    try {
      m = JSON.parse(text);
    } catch (e) {
      throw new BasedError(`${join(dir, "manifest.json")}: not JSON (${(e as Error).message})`);
    }
    if (!m || typeof m.tensors !== "object") {
      throw new BasedError(`${join(dir, "manifest.json")}: no 'tensors' table`);
    }
    m.info ??= {};
    const f = new Fixtures(dir, m);
    for (const file of new Set(Object.values(m.tensors).map((t) => t.file))) {
      const path = join(dir, file);
      try {
        f.#files.set(file, parseSafetensors(await Deno.readFile(path), path));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue; // cases needing it are skipped
        throw e;
      }
    }
    return f;
  }

  has(name: string): boolean {
    const t = this.manifest.tensors[name];
    return !!t && !!this.#files.get(t.file)?.tensors.has(name);
  }

  data(name: string): Float32Array {
    const t = this.manifest.tensors[name];
    const f = t && this.#files.get(t.file);
    if (!f) throw new BasedError(`fixture tensor '${name}' is missing`);
    const d = tensorData(f, name);
    return d instanceof Float32Array ? d : Float32Array.from(d);
  }

  ints(name: string): Int32Array {
    const t = this.manifest.tensors[name];
    const f = t && this.#files.get(t.file);
    if (!f) throw new BasedError(`fixture tensor '${name}' is missing`);
    const d = tensorData(f, name);
    return d instanceof Int32Array ? d : Int32Array.from(d);
  }

  shape(name: string): number[] {
    return this.manifest.tensors[name].shape;
  }

  tol(name: string): Tolerance | null {
    const t = this.manifest.tensors[name]?.tolerance;
    return t && typeof t === "object" ? t : null;
  }

  /** Names of expected (non-input) tensors. */
  expected(): string[] {
    return Object.keys(this.manifest.tensors).filter((n) => this.tol(n) !== null);
  }
}

/** (B, A, C, ...) <-> (A, B, ...) style swap of axes 1 and 2 of a rank-4 array. */
export function swap12(x: ArrayLike<number>, shape: number[]): Float32Array {
  const [a, b, c, d] = shape;
  const out = new Float32Array(a * b * c * d);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      for (let k = 0; k < c; k++) {
        const src = ((i * b + j) * c + k) * d;
        const dst = ((i * c + k) * b + j) * d;
        for (let l = 0; l < d; l++) out[dst + l] = x[src + l];
      }
    }
  }
  return out;
}

class CaseRun {
  comps: Comparison[] = [];
  /** f16 runs: the f16 roundings along the longest path of this case (0: runs in fp32) */
  f16Roundings = 0;
  constructor(readonly fx: Fixtures, readonly covered: Set<string>) {}
  /** `f16Atol`: an absolute term added to the f16 tolerance (AdamW values: adamDriftBound) */
  check(name: string, got: ArrayLike<number>, ref?: ArrayLike<number>, f16Atol = 0): void {
    let tol = this.fx.tol(name);
    if (!tol || !this.fx.has(name)) return;
    this.covered.add(name);
    const want = ref ?? this.fx.data(name);
    if (f16 && this.f16Roundings) {
      tol = f16Tolerance(tol, want, this.f16Roundings);
      tol.atol += f16Atol;
    }
    this.comps.push(compareTensor(name, got, want, tol));
  }
  result(name: string): CaseResult {
    if (this.comps.length === 0) {
      return {
        name,
        status: "skip",
        tensors: 0,
        maxRelErr: 0,
        relL2: 0,
        worst: "",
        worstRatio: 0,
        note: "no expected tensors",
      };
    }
    const worst = this.comps.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    const failed = this.comps.filter((c) => !c.ok);
    return {
      name,
      status: failed.length ? "fail" : "pass",
      tensors: this.comps.length,
      maxRelErr: Math.max(...this.comps.map((c) => c.maxRelErr)),
      relL2: Math.max(...this.comps.map((c) => c.relL2)),
      worst: worst.name,
      worstRatio: worst.ratio,
      note: failed.length ? `${failed.length} failed; first: ${failed[0].msg}` : undefined,
    };
  }
}

function leaf(e: Engine, data: Float32Array, shape: number[]): Tensor {
  const t = e.tensor(data, shape);
  t.requiresGrad = true;
  return t;
}

async function readGrad(t: Tensor): Promise<Float32Array> {
  if (!t.grad) return new Float32Array(t.size);
  return await t.engine.readF32(t.grad);
}

function disposeAll(ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) {
    t?.grad?.dispose();
    if (t) t.grad = null;
    t?.dispose();
  }
}

// ----------------------------------------------------------------- cases

async function linearAttentionCase(
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

async function featureMapCase(
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

async function slidingCoreCase(e: Engine, fx: Fixtures, covered: Set<string>): Promise<CaseResult> {
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

async function moduleCase(
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
  // f16: the module's linear layers, forward (x, W) and backward (dy): 3 per layer, 2 layers deep
  run.f16Roundings = 6;
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

function mixerCfg(kind: MixerConfig["kind"], o: Partial<MixerConfig>): MixerConfig {
  return {
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
  const cfgObj = { ...(yamlKeys?.model?.config ?? {}) };
  if (view) {
    cfgObj.alt_mixer = {
      ...(cfgObj.alt_mixer as Record<string, unknown>),
      parallel_implementation: view,
      eps: 1e-12,
    };
  }
  const config = modelConfigFromCfg(cfgObj);
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

async function modelCase(
  e: Engine,
  fx: Fixtures,
  view: LinearAttentionView,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const { model } = buildModel(e, fx, view);
  // f16: per block two linear layers deep in the mixer and two in the MLP, forward and backward
  run.f16Roundings = 6 * model.config.nLayer + 3;
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
  const inv = f16 ? 1 / await f16.scale() : 1; // f16: gradients carry the loss scale (a power of 2)
  for (const [n, g] of grads) run.check(`grad.${n}`, inv === 1 ? g : g.map((v) => v * inv));
  disposeAll([logits, loss, batch.ids, batch.labels]);
  model.store.destroy();
  return run.result(`model [${view}] logits, loss, activations, gradients`);
}

async function adamwCase(
  e: Engine,
  fx: Fixtures,
  clip: boolean,
  covered: Set<string>,
): Promise<CaseResult> {
  const run = new CaseRun(fx, covered);
  const pre = clip ? "clip." : "";
  const { model, wd } = buildModel(e, fx);
  run.f16Roundings = 6 * model.config.nLayer + 3;
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
  const clipper = new GradClip(model.store, clip ? 1.0 : Infinity, f16?.scaler ?? null);
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
    f16?.autocast.newWeights();
    if (step === 1 || step === 3) {
      const vals = await model.store.read("values");
      const drift = adamDriftBound(opt.lr ?? 1e-3, opt.betas ?? [0.9, 0.95], step);
      for (const [n, v] of vals) run.check(`${pre}step${step}.${n}`, v, undefined, drift);
    }
  }
  run.check(`${pre}losses`, losses);
  run.check(`${pre}grad_norms`, norms);
  disposeAll([batch.ids, batch.labels]);
  adam.destroy?.();
  model.store.destroy();
  return run.result(`AdamW 3 steps${clip ? " with clip_grad_norm 1.0" : ""}`);
}

// ----------------------------------------------------------------- runner

export interface ParityOptions {
  views?: LinearAttentionView[];
  log?: (line: string) => void;
  /** only cases whose name contains this string */
  filter?: string;
  /** 16-mixed: the model's cases in f16 mixed precision with f16 tolerances (parity_f16.ts) */
  precision?: "32-true" | "16-mixed";
}

export function formatCase(r: CaseResult): string {
  const tag = r.status === "pass" ? "ok  " : r.status === "fail" ? "FAIL" : "skip";
  if (r.status === "skip") return `${tag} ${r.name}${r.note ? `: ${r.note}` : ""}`;
  return `${tag} ${r.name}: ${r.tensors} tensors, max rel err ${r.maxRelErr.toExponential(2)}, ` +
    `rel L2 ${r.relL2.toExponential(2)}, worst ${r.worst} at ${
      (r.worstRatio * 100).toFixed(0)
    }% of tolerance` +
    (r.note ? ` — ${r.note}` : "");
}

export async function runParity(
  e: Engine,
  dir: string,
  opts: ParityOptions = {},
): Promise<CaseResult[]> {
  const fx = await Fixtures.open(dir);
  if (opts.precision === "16-mixed") {
    if (!e.hasF16) {
      throw new BasedError(
        `this adapter (${e.info.name}) has no shader-f16, which --precision 16-mixed needs`,
        "run parity in fp32 (without --precision)",
      );
    }
    f16 = new ParityF16(e);
  }
  try {
    return await runCases(e, fx, opts);
  } finally {
    f16?.stop();
    f16 = null;
  }
}

async function runCases(e: Engine, fx: Fixtures, opts: ParityOptions): Promise<CaseResult[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const views = opts.views ?? VIEWS;
  const covered = new Set<string>();
  const results: CaseResult[] = [];
  const t = fx.manifest.tensors;
  const want = (name: string) => !opts.filter || name.includes(opts.filter);
  const add = async (name: string, f: () => Promise<CaseResult>) => {
    if (!want(name)) return;
    let r: CaseResult;
    try {
      r = await f();
    } catch (err) {
      clearTape();
      r = {
        name,
        status: "fail",
        tensors: 0,
        maxRelErr: Infinity,
        relL2: Infinity,
        worst: "",
        worstRatio: Infinity,
        note: (err as Error).message.split("\n")[0],
      };
    }
    results.push(r);
    log(formatCase(r));
  };

  // linear attention kernel cases: every prefix with q, k, v, dy, y
  const laPrefixes = [
    ...new Set(
      Object.keys(t).filter((n) =>
        /\.y$/.test(n) && t[n.replace(/\.y$/, ".q")] && t[n.replace(/\.y$/, ".dy")]
      ).map((n) => n.replace(/\.y$/, "")),
    ),
  ];
  for (const p of laPrefixes) {
    for (const v of views) {
      await add(`linear attention ${p} [${v}]`, () => linearAttentionCase(e, fx, p, v, covered));
    }
    if (fx.has(`${p}.phi_q`)) {
      await add(`taylor feature map ${p}`, () => featureMapCase(e, fx, p, covered));
    }
  }
  if (fx.has("swa.qkv")) {
    await add("sliding window attention + rotary (core)", () => slidingCoreCase(e, fx, covered));
  }
  if (fx.has("conv.x")) {
    const info = fx.manifest.info.baseconv ?? {};
    const d = fx.shape("conv.x")[2];
    const inner = fx.shape("conv.in_proj.weight")[0] / 2;
    const m = mixerCfg("conv", {
      expandProj: Number(info.expand_proj ?? (2 * inner) / d),
      kernelSize: fx.shape("conv.conv.conv.weight")[2],
      useBias: fx.has("conv.in_proj.bias"),
    });
    await add(
      "BaseConv module",
      () =>
        moduleCase(
          e,
          fx,
          "conv",
          [
            "in_proj.weight",
            "in_proj.bias",
            "out_proj.weight",
            "out_proj.bias",
            "conv.conv.weight",
          ],
          (w, x) => baseConv(m, w, x, d),
          async (run, w, x) => {
            // the pre-silu conv output, recomputed without recording
            const c = noGrad(() =>
              tidy(() => {
                const z = linear(x, w("in_proj.weight"), m.useBias ? w("in_proj.bias") : undefined);
                return causalConv1d(split(z, -1, [inner, inner])[0], w("conv.conv.weight"));
              })
            );
            run.check("conv.conv_out", await e.readF32(c));
            c.dispose();
          },
          "BaseConv module",
          covered,
        ),
    );
  }
  if (fx.has("la_module.x")) {
    const info = (fx.manifest.info.linear_attention?.la_module ?? {}) as Record<string, number>;
    const [B, L] = fx.shape("la_module.x");
    const F = info.F ?? 16;
    const H = info.H ?? fx.shape("la_module.proj_q.weight")[0] / F;
    for (const v of views) {
      const m = mixerCfg("linear", {
        featureDim: F,
        numHeads: H,
        headDim: fx.shape("la_module.proj_v.weight")[0] / H,
        view: v,
      });
      await add(
        `LinearAttention module [${v}]`,
        () =>
          moduleCase(
            e,
            fx,
            "la_module",
            ["proj_q.weight", "proj_k.weight", "proj_v.weight", "out_proj.weight"],
            (w, x) => linearAttentionMixer(m, w, x, B, L),
            async () => {},
            `LinearAttention module [${v}]`,
            covered,
          ),
      );
    }
  }
  if (fx.has("swa_module.x")) {
    const info = fx.manifest.info.sliding_window ?? {};
    const [B, L, d] = fx.shape("swa_module.x");
    const m = mixerCfg("slide", {
      numHeads: Number(info.H ?? 1),
      window: Number(info.window_size ?? 2 * L),
    });
    const ctx = {
      nEmbd: d,
      rotaryBase: Number(info.rotary_base ?? 10000),
      rotaryFraction: Number(info.rotary_dim ?? d / m.numHeads) / (d / m.numHeads),
    };
    await add(
      "SlidingAttention module",
      () =>
        moduleCase(
          e,
          fx,
          "swa_module",
          ["Wqkv.weight", "out_proj.weight"],
          (w, x) => slidingMixer(m, w, x, B, L, ctx),
          async () => {},
          "SlidingAttention module",
          covered,
        ),
    );
  }
  if (fx.has("input_ids") && fx.has(EMBEDDING)) {
    for (const v of views) {
      await add(
        `model [${v}] logits, loss, activations, gradients`,
        () => modelCase(e, fx, v, covered),
      );
    }
    if (fx.has("step1." + EMBEDDING) || fx.has("losses")) {
      await add("AdamW 3 steps", () => adamwCase(e, fx, false, covered));
      if (fx.has("clip.losses")) {
        await add("AdamW 3 steps with clip_grad_norm 1.0", () => adamwCase(e, fx, true, covered));
      }
    }
  }
  // expected tensors no case compared (reported, not failed)
  const unchecked = fx.expected().filter((n) => !covered.has(n));
  if (unchecked.length && !opts.filter) {
    const r: CaseResult = {
      name: "not compared",
      status: "skip",
      tensors: 0,
      maxRelErr: 0,
      relL2: 0,
      worst: "",
      worstRatio: 0,
      note: `${unchecked.length} expected tensors no case uses: ${
        unchecked.slice(0, 8).join(", ")
      }${unchecked.length > 8 ? ", …" : ""}`,
    };
    results.push(r);
    log(formatCase(r));
  }
  return results;
}
