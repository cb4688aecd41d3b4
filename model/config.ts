/**
 * The model configuration, read from the `model.config` section of a
 * resolved config in the reference's keys (GPT2MixerConfig + mixer blocks).
 */
import { BasedError } from "../errors.ts";

export type MixerKind = "conv" | "linear" | "slide" | "mha";

export interface MixerConfig {
  kind: MixerKind;
  /** BaseConv */
  expandProj: number;
  useBias: boolean;
  kernelSize: number;
  /** LinearAttention */
  featureDim: number;
  numHeads: number;
  headDim: number;
  eps: number;
  view: string;
  /** SlidingAttention / MHA: keys max(0, i - window/2) .. i; Infinity for full causal attention */
  window: number;
  /** LinearAttention: the paper's fixed decay (model.config.fixed_decay), null when off */
  decay?: { c0: number; denom: boolean } | null;
}

export interface BasedConfig {
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nInner: number;
  /** hidden width of the SwiGLU MLP (n_inner rounded up to 256) */
  mlpHidden: number;
  vocabSize: number;
  /** vocabSize padded to pad_vocab_size_multiple */
  vocabPadded: number;
  normEps: number;
  initializerRange: number;
  rotaryBase: number;
  rotaryFraction: number;
  layers: MixerConfig[];
  /** positions the model was configured for (n_positions / l_max) */
  maxLength: number;
}

type Obj = Record<string, unknown>;

function num(o: Obj, key: string, def?: number, where = "model.config"): number {
  const v = o[key];
  if (v === undefined || v === null) {
    if (def === undefined) throw new BasedError(`${where}.${key} is required`);
    return def;
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new BasedError(`${where}.${key} must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function targetKind(o: Obj | undefined, fallback: MixerKind): MixerKind {
  const t = typeof o?._target_ === "string" ? (o._target_ as string) : "";
  if (/BaseConv$/.test(t)) return "conv";
  if (/LinearAttention$/.test(t)) return "linear";
  if (/SlidingAttention$/.test(t)) return "slide";
  if (/\.MHA$|^MHA$/.test(t)) return "mha";
  if (t === "") return fallback;
  throw new BasedError(
    `unsupported mixer _target_ '${t}'`,
    "supported: BaseConv, LinearAttention, SlidingAttention, MHA",
  );
}

function mixerConfig(
  o: Obj | undefined,
  fallback: MixerKind,
  nEmbd: number,
  nHead: number,
  where: string,
): MixerConfig {
  const m = o ?? {};
  const kind = targetKind(o, fallback);
  const numHeads = num(m, "num_heads", nHead, where);
  const featureDim = num(m, "feature_dim", 16, where);
  const view = typeof m.parallel_implementation === "string"
    ? m.parallel_implementation
    : "quadratic";
  const defaultEps = /fla/.test(view) ? 1e-6 : 1e-12;
  return {
    kind,
    expandProj: num(m, "expand_proj", 2, where),
    useBias: m.use_bias === undefined ? true : Boolean(m.use_bias),
    // `kernel_sizes` is swallowed by **kwargs in the reference; BaseConv's kernel_size default (3) applies
    kernelSize: num(m, "kernel_size", 3, where),
    featureDim,
    numHeads,
    headDim: num(m, "head_dim", nEmbd / numHeads, where),
    eps: num(m, "eps", defaultEps, where),
    view,
    window: kind === "mha" ? Infinity : num(m, "window_size", 128, where),
    decay: null,
  };
}

/**
 * The decay keys of `model.config` (the reference's GPT2MixerConfig, read by
 * `DecayClass`): fixed_decay (default off), decay_const c0 (class default −5),
 * decay_denom (class default true); decay_proj (data-dependent) is refused.
 */
function decayConfig(c: Obj): { c0: number; denom: boolean } | null {
  if (c.decay_proj) {
    throw new BasedError(
      "model.config.decay_proj (the data-dependent decay) is not supported yet",
      "remove it (fixed_decay works without it)",
    );
  }
  if (!c.fixed_decay) return null;
  const c0 = num(c, "decay_const", -5);
  if (!(c0 < 0)) {
    throw new BasedError(
      `model.config.decay_const must be negative (r_h = 1 - 2^(c0 - h) > 0), got ${c0}`,
    );
  }
  return { c0, denom: c.decay_denom === undefined ? true : Boolean(c.decay_denom) };
}

/** Builds the model configuration from `model.config` (spec §2). */
export function modelConfigFromCfg(c: Obj, maxLength?: number): BasedConfig {
  const nEmbd = num(c, "n_embd");
  const nLayer = num(c, "n_layer");
  const nHead = num(c, "n_head", 12);
  const nInner = c.n_inner == null ? 4 * nEmbd : num(c, "n_inner");
  const vocabSize = num(c, "vocab_size", 50257);
  const pad = num(c, "pad_vocab_size_multiple", 1);
  const alt1 = (c.alt_mixer_layers as number[] | undefined) ?? [];
  const alt2 = (c.alt_mixer_2_layers as number[] | undefined) ?? [];
  const base = mixerConfig(c.mixer as Obj | undefined, "mha", nEmbd, nHead, "model.config.mixer");
  const a1 = c.alt_mixer
    ? mixerConfig(c.alt_mixer as Obj, "linear", nEmbd, nHead, "model.config.alt_mixer")
    : null;
  const a2 = c.alt_mixer_2
    ? mixerConfig(c.alt_mixer_2 as Obj, "slide", nEmbd, nHead, "model.config.alt_mixer_2")
    : null;
  const decay = decayConfig(c);
  const withDecay = (m: MixerConfig | null) => {
    if (!m || !decay || m.kind !== "linear") return m;
    if (!["quadratic", "chunked", "fla_parallel", "fla_chunk"].includes(m.view)) {
      throw new BasedError(
        `model.config.fixed_decay: the linear-attention view '${m.view}' does not implement the decay yet`,
        "set parallel_implementation=quadratic or chunked in the linear-attention mixer config",
      );
    }
    return { ...m, decay };
  };
  const layers: MixerConfig[] = [];
  for (let i = 0; i < nLayer; i++) {
    if (alt2.includes(i) && a2) layers.push(withDecay(a2)!);
    else if (alt1.includes(i) && a1) layers.push(withDecay(a1)!);
    else layers.push(withDecay(base)!);
  }
  if (c.activation_function !== undefined && c.activation_function !== "swiglu") {
    throw new BasedError(
      `model.config.activation_function '${c.activation_function}' is not supported`,
      "use swiglu",
    );
  }
  for (const l of layers) {
    if (l.kind === "linear" && l.headDim * l.numHeads !== nEmbd) {
      throw new BasedError(`linear attention: num_heads x head_dim must equal n_embd (${nEmbd})`);
    }
    if ((l.kind === "slide" || l.kind === "mha") && nEmbd % l.numHeads !== 0) {
      throw new BasedError(
        `attention: n_embd ${nEmbd} is not divisible by num_heads ${l.numHeads}`,
      );
    }
  }
  return {
    nEmbd,
    nLayer,
    nHead,
    nInner,
    mlpHidden: Math.ceil(nInner / 256) * 256,
    vocabSize,
    vocabPadded: Math.ceil(vocabSize / pad) * pad,
    normEps: num(c, "layer_norm_epsilon", 1e-5),
    initializerRange: num(c, "initializer_range", 0.02),
    rotaryBase: num(c, "rotary_emb_base", 10000),
    rotaryFraction: num(c, "rotary_emb_fraction", 1),
    layers,
    maxLength: maxLength ?? num(c, "n_positions", 2048),
  };
}
