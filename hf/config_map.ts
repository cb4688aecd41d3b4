/**
 * config.json of a released Based model (the GPT2Config keyword arguments that
 * `GPTLMHeadModel.from_pretrained_hf` of the reference passes to GPT2Config)
 * to our `model.config` (the same keys, as configs/experiment/example/*.yaml
 * write them), and back for `based export --hf`.
 *
 * The keys are the reference's own, so the mapping is mostly a check: keys
 * that would change the network in a way based does not implement are
 * refused (with the key and its value), keys based does not read are named
 * in one warning line, and the vocabulary is padded as the reference pads it
 * (`pad_vocab_size_multiple`, in model/config.ts).
 */
import { BasedError } from "../errors.ts";

type Obj = Record<string, unknown>;

/** Keys model/config.ts reads. */
const USED = [
  "n_embd",
  "n_layer",
  "n_head",
  "n_inner",
  "vocab_size",
  "pad_vocab_size_multiple",
  "alt_mixer_layers",
  "alt_mixer_2_layers",
  "mixer",
  "alt_mixer",
  "alt_mixer_2",
  "activation_function",
  "layer_norm_epsilon",
  "initializer_range",
  "rotary_emb_base",
  "rotary_emb_fraction",
  "n_positions",
  "max_position_embeddings",
  // the decay option (issue 13): model.config keys of the reference, passed through
  "fixed_decay",
  "decay_const",
  "decay_denom",
  "decay_proj",
];

/**
 * Keys that change nothing in the forward pass (kernels, dropout at p = 0 in
 * inference, initialisation, Hugging Face bookkeeping).
 */
const HARMLESS = [
  "residual_in_fp32",
  "use_flash_attn",
  "fused_mlp",
  "fused_bias_fc",
  "fused_dropout_add_ln",
  "fused_dense_sqrelu_dense",
  "attn_pdrop",
  "embd_pdrop",
  "resid_pdrop",
  "summary_first_dropout",
  "special_initializer",
  "use_weight_init",
  "reorder_and_upcast_attn",
  "sequence_parallel",
  "mlp_checkpoint_lvl",
  "n_ctx",
  "model_type",
  "architectures",
  "bos_token_id",
  "eos_token_id",
  "pad_token_id",
  "torch_dtype",
  "transformers_version",
  "_name_or_path",
  "_commit_hash",
  "use_cache",
  "return_dict",
  "output_hidden_states",
  "output_attentions",
  "torchscript",
  "summary_type",
  "summary_use_proj",
  "summary_activation",
  "summary_proj_to_labels",
  "task_specific_params",
  "tokenizer_class",
];

/** Keys whose value must be the one given (or absent where `absentOk`), else the network differs. */
const REQUIRED: [key: string, value: unknown, absentOk: boolean, why: string][] = [
  ["rms_norm", true, false, "based's blocks use RMSNorm (absent means LayerNorm in the reference)"],
  [
    "mlp_fc1_bias",
    false,
    false,
    "based's MLP has no biases (absent means biases in the reference)",
  ],
  [
    "mlp_fc2_bias",
    false,
    false,
    "based's MLP has no biases (absent means biases in the reference)",
  ],
  ["prenorm", true, true, "based's blocks are pre-norm"],
  ["parallel_block", false, true, "based's blocks are sequential"],
  ["tie_word_embeddings", true, true, "based's LM head is the word embedding (tied)"],
  ["lm_head_bias", false, true, "based's LM head has no bias"],
  ["word_embed_proj_dim", null, true, "based has no embedding projection"],
  ["scale_attn_weights", true, true, "attention scores are scaled by head_dim^-0.5"],
  ["scale_attn_by_inverse_layer_idx", false, true, "attention scores are not scaled per layer"],
  ["rotary_emb_interleaved", false, true, "based's rotary embedding is not interleaved"],
  ["rotary_emb_scale_base", null, true, "based's rotary embedding is not XPos-scaled"],
  ["attn_dwconv", false, true, "based's attention has no depthwise convolution"],
  ["mlp_type", "base", true, "based's MLP is the gated base MLP"],
];

/** Keys of the mixer dicts that model/config.ts reads or that change nothing. */
const MIXER_KEYS = new Set([
  "_target_",
  "l_max",
  "use_bias",
  "expand_proj",
  "kernel_sizes",
  "kernel_size",
  "feature_map",
  "feature_dim",
  "num_heads",
  "num_key_value_heads",
  "head_dim",
  "eps",
  "parallel_implementation",
  "train_view",
  "window_size",
  "causal",
  "dropout",
]);

/** Biases the reference's attention layers have unless the config turns them off. */
const ATTENTION_BIAS = ["qkv_proj_bias", "out_proj_bias"];

export interface MappedConfig {
  /** the `model.config` section (reference keys) */
  modelConfig: Obj;
  /** the sequence length the model was built for (the mixers' l_max, else n_positions) */
  maxLength: number;
  /** keys of config.json based does not read (named in one warning line) */
  unknown: string[];
  /** what the mapping changed, one line each (printed as warnings) */
  notes: string[];
}

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** config.json (parsed) -> our model config; `source` names the file in errors. */
export function mapHfConfig(json: unknown, source: string): MappedConfig {
  if (!isObj(json)) throw new BasedError(`${source}: not a JSON object`);
  const fail = (what: string, hint?: string): never => {
    throw new BasedError(`${source}: ${what}`, hint);
  };
  for (const k of ["n_embd", "n_layer"]) {
    if (typeof json[k] !== "number") fail(`no ${k}`, "not the config.json of a Based model");
  }
  for (const [key, want, absentOk, why] of REQUIRED) {
    const has = Object.hasOwn(json, key) && json[key] !== undefined;
    if (!has && absentOk) continue;
    if (!has || json[key] !== want) {
      fail(
        `${key} is ${has ? JSON.stringify(json[key]) : "absent"}, based needs ${
          JSON.stringify(want)
        }`,
        why,
      );
    }
  }
  const mixerKeys = ["mixer", "alt_mixer", "alt_mixer_2"].filter((k) => json[k] != null);
  const usesAttention = !json.mixer ||
    mixerKeys.some((k) =>
      /Attention$|MHA$/.test(String((json[k] as Obj)._target_ ?? "")) &&
      !/LinearAttention$/.test(String((json[k] as Obj)._target_))
    );
  if (usesAttention) {
    for (const k of ATTENTION_BIAS) {
      if (json[k] !== false) {
        fail(
          `${k} is ${
            json[k] === undefined ? "absent" : JSON.stringify(json[k])
          }, based needs false`,
          "based's attention projections have no biases (absent means biases in the reference)",
        );
      }
    }
  }
  const unknown: string[] = [];
  const known = new Set([
    ...USED,
    ...HARMLESS,
    ...REQUIRED.map((r) => r[0]),
    ...ATTENTION_BIAS,
  ]);
  for (const k of Object.keys(json)) if (!known.has(k)) unknown.push(k);
  const lMax: number[] = [];
  for (const k of mixerKeys) {
    const m = json[k];
    if (!isObj(m)) return fail(`${k} is not an object`);
    for (const mk of Object.keys(m)) if (!MIXER_KEYS.has(mk)) unknown.push(`${k}.${mk}`);
    const fm = m.feature_map;
    if (fm != null && !(isObj(fm) && /TaylorExp$/.test(String(fm._target_ ?? "")))) {
      fail(
        `${k}.feature_map is ${JSON.stringify(fm)}`,
        "based implements the TaylorExp feature map only",
      );
    }
    if (typeof m.l_max === "number" && m.l_max > 0) lMax.push(m.l_max);
  }
  const modelConfig: Obj = {};
  for (const k of USED) if (json[k] !== undefined) modelConfig[k] = json[k];
  for (
    const k of ["rms_norm", "mlp_fc1_bias", "mlp_fc2_bias", ...ATTENTION_BIAS, "residual_in_fp32"]
  ) {
    if (json[k] !== undefined) modelConfig[k] = json[k];
  }
  // The reference passes the decay to LinearAttention, which ignores it (its
  // `**kwargs`; based/models/mixers/linear_attention.py), so a released model
  // that says fixed_decay was trained, and computes, without it.
  const notes: string[] = [];
  if (modelConfig.fixed_decay) {
    notes.push(
      "fixed_decay is set, but the reference's LinearAttention ignores the decay: " +
        "loaded without it, as the reference computes this model",
    );
    modelConfig.fixed_decay = false;
    delete modelConfig.decay_proj;
  }
  const nPos = typeof json.n_positions === "number" && json.n_positions > 0
    ? json.n_positions
    : 2048;
  return { modelConfig, maxLength: lMax.length ? Math.min(...lMax) : nPos, unknown, notes };
}

/**
 * Our `model.config` -> config.json for `based export --hf`: the GPT2Config
 * keyword arguments the reference reads (its top-level `_target_` dropped; the
 * mixers keep theirs, hydra instantiates them), plus what the Hugging Face
 * layout carries.
 */
export function hfConfigJson(modelConfig: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(modelConfig)) if (k !== "_target_") out[k] = v;
  // what based's network is, whatever the config said (model/config.ts does not read these)
  Object.assign(out, {
    rms_norm: true,
    mlp_fc1_bias: false,
    mlp_fc2_bias: false,
    qkv_proj_bias: false,
    out_proj_bias: false,
  });
  out.model_type = "gpt2";
  out.architectures = ["GPTLMHeadModel"];
  out.torch_dtype = "float32";
  out.tie_word_embeddings = true;
  return out;
}
