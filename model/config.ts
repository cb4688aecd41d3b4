/**
 * The model configuration, read from the `model.config` section of a
 * resolved config in the reference's keys (GPT2MixerConfig + mixer blocks),
 * once, when the run's config is read: defaults applied, the layer-to-mixer
 * map resolved (`layers`), the linear-attention view names resolved to views
 * (an unknown name fails here, with the valid names). Everything downstream
 * (the model, preflight checks, parity, the kernels) takes this typed config.
 */
import { BasedError } from "../errors.ts";
import { cfgNum, type Config, type Obj } from "../config/mod.ts";
import { type LinearAttentionView, resolveView } from "../kernels/linear_attention/mod.ts";

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
  /** the training view (resolved from `parallel_implementation`; linear attention only) */
  view: LinearAttentionView;
  /** SlidingAttention / MHA: keys max(0, i - window/2) .. i; Infinity for full causal attention */
  window: number;
  /** the `model.config` key this mixer was read from */
  section: MixerSection;
  /** `l_max`: the sequence length the mixer is built for, when configured (> 0) */
  lMax?: number;
}

/** The mixer sections of `model.config`, in the order the layer map consults them. */
export type MixerSection = "mixer" | "alt_mixer" | "alt_mixer_2";

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
  /** learned absolute positions, when configured (> 0); rotary models have none */
  maxPositionEmbeddings?: number;
}

/** A number at `where.key` of `model.config` (c), through the config's typed accessors. */
function num(c: Obj, key: string, def?: number, where = "model.config"): number {
  const root = { model: { config: c } } as unknown as Config;
  const path = `${where}.${key}`;
  return def === undefined ? cfgNum(root, path) : cfgNum(root, path, def);
}

/** A positive number, or undefined when absent, null or not positive. */
function positive(v: unknown): number | undefined {
  return typeof v === "number" && v > 0 ? v : undefined;
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
  c: Obj,
  section: MixerSection,
  fallback: MixerKind,
  nEmbd: number,
  nHead: number,
): MixerConfig {
  const o = c[section] as Obj | undefined;
  const m = o ?? {};
  const where = `model.config.${section}`;
  const kind = targetKind(o, fallback);
  const numHeads = num(c, "num_heads", nHead, where);
  const featureDim = num(c, "feature_dim", 16, where);
  const name = typeof m.parallel_implementation === "string"
    ? m.parallel_implementation
    : "quadratic";
  const defaultEps = /fla/.test(name) ? 1e-6 : 1e-12;
  return {
    kind,
    expandProj: num(c, "expand_proj", 2, where),
    useBias: m.use_bias === undefined ? true : Boolean(m.use_bias),
    // `kernel_sizes` is swallowed by **kwargs in the reference; BaseConv's kernel_size default (3) applies
    kernelSize: num(c, "kernel_size", 3, where),
    featureDim,
    numHeads,
    headDim: num(c, "head_dim", nEmbd / numHeads, where),
    eps: num(c, "eps", defaultEps, where),
    view: kind === "linear" ? viewOf(name, where) : "quadratic",
    window: kind === "mha" ? Infinity : num(c, "window_size", 128, where),
    section,
    lMax: positive(m.l_max),
  };
}

function viewOf(name: string, where: string): LinearAttentionView {
  try {
    return resolveView(name);
  } catch (e) {
    if (!(e instanceof BasedError)) throw e;
    throw new BasedError(`${where}.parallel_implementation: ${e.message}`);
  }
}

/**
 * Builds the model configuration from `model.config` (`based/models/gpt.py`, docs/reference.md).
 */
export function modelConfigFromCfg(c: Obj, maxLength?: number): BasedConfig {
  const nEmbd = num(c, "n_embd");
  const nLayer = num(c, "n_layer");
  const nHead = num(c, "n_head", 12);
  const nInner = c.n_inner == null ? 4 * nEmbd : num(c, "n_inner");
  const vocabSize = num(c, "vocab_size", 50257);
  const pad = num(c, "pad_vocab_size_multiple", 1);
  const alt1 = (c.alt_mixer_layers as number[] | undefined) ?? [];
  const alt2 = (c.alt_mixer_2_layers as number[] | undefined) ?? [];
  const base = mixerConfig(c, "mixer", "mha", nEmbd, nHead);
  const a1 = c.alt_mixer ? mixerConfig(c, "alt_mixer", "linear", nEmbd, nHead) : null;
  const a2 = c.alt_mixer_2 ? mixerConfig(c, "alt_mixer_2", "slide", nEmbd, nHead) : null;
  const layers: MixerConfig[] = [];
  for (let i = 0; i < nLayer; i++) {
    if (alt2.includes(i) && a2) layers.push(a2);
    else if (alt1.includes(i) && a1) layers.push(a1);
    else layers.push(base);
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
    maxPositionEmbeddings: positive(c.max_position_embeddings),
  };
}

/** The mixer sections some layer uses, in `model.config` order (for messages naming keys). */
export function usedSections(config: BasedConfig): MixerSection[] {
  const used = new Set(config.layers.map((l) => l.section));
  return (["mixer", "alt_mixer", "alt_mixer_2"] as const).filter((s) => used.has(s));
}

/** The config with every linear-attention layer in `view` (and `eps`, when given). */
export function withView(
  config: BasedConfig,
  view: LinearAttentionView,
  eps?: number,
): BasedConfig {
  const layers = config.layers.map((l) =>
    l.kind === "linear" ? { ...l, view, eps: eps ?? l.eps } : l
  );
  return { ...config, layers };
}
