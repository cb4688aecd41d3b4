/**
 * The golden test: `experiment=example/based-360m trainer.devices=8` resolves to
 * the reference's effective config (the values docs/reference.md lists and the
 * rest of the tree as the reference resolves it, and the plumbing
 * that our trainer reads).
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { parse } from "yaml";
import { toYaml } from "../../config/mod.ts";
import { at, compose, CWD } from "../config/helpers.ts";

const GOLDEN: Record<string, unknown> = {
  // root
  work_dir: CWD,
  data_dir: `${CWD}/data/`,
  test_after_training: true,
  resume: true,
  seed: 1111,
  expt_name: "02-20-based-360m",
  name: "02-20-based-360m",
  do_test: true,
  default_mode: true,
  // trainer
  "trainer.accelerator": "gpu",
  "trainer.min_epochs": 1,
  "trainer.max_epochs": 1000,
  "trainer.devices": 8,
  "trainer.num_nodes": 1,
  "trainer.accumulate_grad_batches": 4,
  "trainer.max_steps": 20000,
  "trainer.val_check_interval": 4000,
  "trainer.check_val_every_n_epoch": null,
  "trainer.precision": "bf16",
  "trainer.gradient_clip_val": 1.0,
  "trainer.strategy": null,
  // Lightning defaults written out
  "trainer.gradient_clip_algorithm": "norm",
  "trainer.log_every_n_steps": 50,
  "trainer.num_sanity_val_steps": 2,
  "trainer.limit_val_batches": 1.0,
  "trainer.limit_test_batches": 1.0,
  // task
  "task._target_": "train.tasks.seq.SequenceLMModel",
  // train
  "train.global_batch_size": 256,
  "train.optimizer._target_": "apex.optimizers.FusedAdam",
  "train.optimizer.adam_w_mode": true,
  "train.optimizer.lr": 8e-4,
  "train.optimizer.weight_decay": 0.1,
  "train.optimizer.betas": [0.9, 0.95],
  "train.optimizer.eps": 1e-8,
  "train.optimizer_param_grouping.bias_weight_decay": false,
  "train.optimizer_param_grouping.normalization_weight_decay": false,
  "train.optimizer_param_grouping.rmsnorm_weight_decay": true,
  "train.scheduler._target_": "train.optim.timm_lr_scheduler.TimmCosineLRScheduler",
  "train.scheduler.t_in_epochs": false,
  "train.scheduler.t_initial": 19800,
  "train.scheduler.warmup_lr_init": 1e-6,
  "train.scheduler.warmup_t": 200,
  "train.scheduler.lr_min": 8e-5,
  "train.scheduler.warmup_prefix": true,
  "train.loss_fn._target_": "flash_attn.losses.cross_entropy.CrossEntropyLoss",
  "train.loss_fn.inplace_backward": true,
  // eval
  "eval.log_on_step": true,
  "eval.metrics": {
    ppl: { _target_: "train.metrics.perplexity.Perplexity" },
    "num-tokens": { _target_: "train.metrics.num_tokens.NumTokens" },
  },
  // model
  "model._target_": "based.models.gpt.GPTLMHeadModel",
  "model._recursive_": false,
  "model.config._target_": "based.models.gpt.GPT2MixerConfig",
  "model.config.reorder_and_upcast_attn": false,
  "model.config.scale_attn_by_inverse_layer_idx": false,
  "model.config.n_positions": 2048,
  "model.config.n_embd": 1024,
  "model.config.n_head": 16,
  "model.config.n_layer": 27,
  "model.config.residual_in_fp32": true,
  "model.config.use_flash_attn": true,
  "model.config.fused_dropout_add_ln": false,
  "model.config.fused_mlp": false,
  "model.config.fused_bias_fc": false,
  "model.config.pad_vocab_size_multiple": 8,
  "model.config.alt_mixer_layers": [1, 6, 11, 16, 21],
  "model.config.alt_mixer_2_layers": [2, 7, 12, 17, 22],
  "model.config.mixer": {
    _target_: "based.models.mixers.convolution.BaseConv",
    l_max: 2048,
    use_bias: true,
    expand_proj: 4,
    kernel_sizes: 3,
  },
  "model.config.alt_mixer": {
    _target_: "based.models.mixers.linear_attention.LinearAttention",
    l_max: 2048,
    feature_map: { _target_: "based.models.mixers.linear_attention.TaylorExp", input_dim: 16 },
    feature_dim: 16,
    num_heads: 16,
    parallel_implementation: "quadratic",
    eps: 1e-12,
  },
  "model.config.alt_mixer_2": {
    _target_: "based.models.mixers.slide_attention.SlidingAttention",
    window_size: 128,
    num_heads: 16,
    causal: true,
  },
  "model.config.special_initializer": true,
  "model.config.rms_norm": true,
  "model.config.attn_pdrop": 0,
  "model.config.embd_pdrop": 0,
  "model.config.resid_pdrop": 0,
  "model.config.mlp_fc1_bias": false,
  "model.config.mlp_fc2_bias": false,
  "model.config.out_proj_bias": false,
  "model.config.qkv_proj_bias": false,
  "model.config.activation_function": "swiglu",
  "model.config.rotary_emb_fraction": 1,
  "model.config.max_position_embeddings": 0,
  "model.config.n_inner": 2048,
  // datamodule
  "datamodule._target_": "train.datamodules.language_modeling_hf.LMDataModule",
  "datamodule.dataset_name": "wikitext",
  "datamodule.dataset_config_name": "wikitext-103-v1",
  "datamodule.tokenizer_name": "gpt2",
  "datamodule.data_dir": `${CWD}/data//wikitext103`,
  "datamodule.cache_dir": `${CWD}/data//wikitext103/cache`,
  "datamodule.max_length": 2048,
  "datamodule.add_eos": true,
  "datamodule.batch_size": 8,
  "datamodule.batch_size_eval": 32,
  "datamodule.num_workers": 64,
  "datamodule.use_shmem": false,
  "datamodule.shuffle": true,
  "datamodule.pin_memory": true,
  "datamodule.fault_tolerant": true,
  "datamodule.ddp": true,
  // callbacks
  "callbacks.model_checkpoint._target_": "pytorch_lightning.callbacks.ModelCheckpoint",
  "callbacks.model_checkpoint.monitor": "val/loss",
  "callbacks.model_checkpoint.mode": "min",
  "callbacks.model_checkpoint.save_top_k": 3,
  "callbacks.model_checkpoint.save_last": true,
  "callbacks.model_checkpoint.verbose": false,
  "callbacks.model_checkpoint.every_n_train_steps": 1000,
  "callbacks.model_checkpoint.dirpath": "checkpoints/02-20-based-360m",
  "callbacks.model_checkpoint.filename": "step_{step}",
  "callbacks.model_checkpoint.auto_insert_metric_name": false,
  "callbacks.early_stopping": null,
  "callbacks.learning_rate_monitor.logging_interval": "step",
  "callbacks.norm_monitor._target_": "train.callbacks.norm_monitor.NormMonitor",
  "callbacks.rich_model_summary._target_": "pytorch_lightning.callbacks.RichModelSummary",
  // logger
  "logger.wandb.project": "based",
  "logger.wandb.name": "02-20-based-360m",
  "logger.wandb.id": "02-20-based-360m",
  "logger.wandb.mode": "online",
  "logger.wandb.tags": [],
  // hydra node (mode/default)
  "hydra.run.dir": `${CWD}/logs/runs/2024-02-20/13-05-09`,
};

Deno.test("config/golden: experiment=example/based-360m trainer.devices=8 resolves as the reference's", () => {
  const cfg = compose(["experiment=example/based-360m", "trainer.devices=8"]);
  for (const [k, v] of Object.entries(GOLDEN)) eq(at(cfg, k), v, k);
  // the `__train_len` key is dropped after composition (train/run.py)
  ok(!("__train_len" in (cfg.datamodule as object)));
  // the top-level sections, in Hydra's merge order
  eq(
    Object.keys(cfg).filter((k) => typeof cfg[k] === "object" && cfg[k] !== null),
    ["trainer", "train", "task", "model", "datamodule", "callbacks", "eval", "logger", "hydra"],
  );
  // callbacks: default then norm-monitor
  eq(Object.keys(cfg.callbacks as object), [
    "rich_model_summary",
    "model_checkpoint",
    "early_stopping",
    "learning_rate_monitor",
    "speed_monitor",
    "loss_scale_monitor",
    "params_log",
    "gpu_affinity",
    "norm_monitor",
  ]);
});

Deno.test("config/golden: trainer.devices=1 keeps 256 sequences per step (accumulate 32)", () => {
  const cfg = compose(["experiment=example/based-360m", "trainer.devices=1"]);
  eq(at(cfg, "trainer.accumulate_grad_batches"), 32);
  eq(at(cfg, "trainer.val_check_interval"), 32000);
  eq(at(cfg, "datamodule.ddp"), false);
  eq(at(cfg, "trainer.devices"), 1);
});

Deno.test("config/golden: the example's own devices (8) without a command-line value", () => {
  const cfg = compose(["experiment=example/based-360m"]);
  eq(at(cfg, "trainer.accumulate_grad_batches"), 4);
  eq(at(cfg, "datamodule.batch_size"), 8);
});

Deno.test("config/golden: env variables move data and checkpoints", () => {
  const cfg = compose(["experiment=example/based-360m"], {
    env: { DATA_DIR: "/data", CHECKPOINT_DIR: "/ck", RESULT_DIR: "/res" },
  });
  eq(at(cfg, "datamodule.data_dir"), "/data/wikitext103");
  eq(at(cfg, "datamodule.cache_dir"), "/data/wikitext103/cache");
  eq(at(cfg, "callbacks.model_checkpoint.dirpath"), "/ck/02-20-based-360m");
  eq(at(cfg, "hydra.run.dir"), "/res/runs/2024-02-20/13-05-09");
});

Deno.test("config/golden: --cfg YAML parses back to the same object", () => {
  for (const x of ["example/based-360m", "example/based-tiny", "reference/based-1b"]) {
    const cfg = compose([`experiment=${x}`]);
    const y = toYaml(cfg);
    eq(parse(y), cfg, x);
    ok(y.includes("betas: [0.9, 0.95]"));
  }
});

Deno.test("config/golden: toYaml round-trips awkward values", () => {
  const cfg = {
    s: [
      "null",
      "true",
      "1e-3",
      "",
      "${x}",
      "a: b",
      "- x",
      " lead",
      "multi\nline",
      "#c",
      "'q'",
      "é",
    ],
    n: [0, -0, 1e-7, 1e21, 123456789012, -1.5, Infinity, -Infinity, NaN],
    b: [true, false, null],
    nested: { "num-tokens": { "key with space": [[], {}, [1, [2]]] } },
  };
  eq(parse(toYaml(cfg)), cfg);
});
