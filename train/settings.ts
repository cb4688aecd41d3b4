/**
 * The training settings read from a resolved config, typed and checked, with
 * Lightning's defaults where the config leaves a key out.
 */
import { join, resolve } from "node:path";
import { BasedError } from "../errors.ts";
import { cfgGet, cfgInt, cfgMap, cfgNum, type Config, type Obj } from "../config/mod.ts";
import { checkSequenceLength } from "./preflight.ts";
import { type BasedConfig, modelConfigFromCfg } from "../model/config.ts";

export interface TrainSettings {
  seed: number;
  dataSeed: number;
  maxLength: number;
  batchSize: number;
  batchSizeEval: number;
  accumulate: number;
  devices: number;
  maxSteps: number;
  /** validate every this many optimizer steps (0: never) */
  valEvery: number;
  limitValBatches?: number;
  limitTestBatches?: number;
  logEvery: number;
  ckptEvery: number;
  keepCheckpoints: number;
  checkpointDir: string;
  runDir: string;
  resume: boolean;
  doTest: boolean;
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  scheduler: Record<string, unknown>;
  /** null when the config has no train.optimizer_param_grouping (then everything is decayed) */
  grouping: Record<string, unknown> | null;
  clipNorm: number;
  /** model.config as configured (saved with checkpoints) */
  modelConfig: Record<string, unknown>;
  /** the model configuration, resolved once here (sequence length = maxLength) */
  model: BasedConfig;
  quiet: boolean;
  /** +profile=true: GPU time per kernel kind of one step */
  profile: boolean;
  precision: string;
}

/** The value at a dotted key, undefined when absent. */
const at = (cfg: Config, path: string): unknown => cfgGet<unknown>(cfg, path, undefined);

/** Lightning's limit_*_batches: 1.0 = all, other floats a fraction, ints a count. */
function limitBatches(v: unknown, total: number | undefined): number | undefined {
  if (v === undefined || v === null || v === 1 || v === 1.0) return undefined;
  if (typeof v !== "number" || v < 0) {
    throw new BasedError(`limit batches must be a number ≥ 0, got ${JSON.stringify(v)}`);
  }
  if (Number.isInteger(v) && v > 1) return v;
  return total === undefined ? undefined : Math.max(1, Math.floor(v * total));
}

export function readSettings(cfg: Config, cwd: string): TrainSettings {
  const c = cfg;
  const accumulate = cfgInt(c, "trainer.accumulate_grad_batches", 1);
  if (accumulate < 1) {
    throw new BasedError(`trainer.accumulate_grad_batches must be ≥ 1, got ${accumulate}`);
  }
  const vci = cfgNum(c, "trainer.val_check_interval", 1.0);
  // counted in micro-batches (as Lightning does); fractions of an epoch are resolved by the loop's
  // caller
  const valEvery = Number.isInteger(vci) && vci >= 1
    ? Math.max(1, Math.round(vci / accumulate))
    : 0;
  const seed = at(c, "seed");
  const dirpath = at(c, "callbacks.model_checkpoint.dirpath");
  const name = String(at(c, "name") ?? "run");
  const stamp = new Date().toISOString().replace(/[:]/g, "-").replace(/\..*/, "");
  const runDirCfg = at(c, "hydra.run.dir");
  const betas = at(c, "train.optimizer.betas") ?? [0.9, 0.999];
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === "number")) {
    throw new BasedError(
      `train.optimizer.betas must be a list of two numbers, got ${JSON.stringify(betas)}`,
    );
  }
  const clip = at(c, "trainer.gradient_clip_val");
  const topK = cfgInt(c, "callbacks.model_checkpoint.save_top_k", 1);
  const maxLength = cfgInt(c, "datamodule.max_length");
  const modelConfig = cfgMap(c, "model.config", {}) as Obj;
  const model = modelConfigFromCfg(modelConfig, maxLength);
  checkSequenceLength(model, maxLength);
  return {
    seed: typeof seed === "number" ? seed : 0,
    dataSeed: typeof seed === "number" ? seed : 0,
    maxLength,
    batchSize: cfgInt(c, "datamodule.batch_size"),
    batchSizeEval: cfgInt(c, "datamodule.batch_size_eval", cfgInt(c, "datamodule.batch_size")),
    accumulate,
    devices: cfgInt(c, "trainer.devices", 1),
    maxSteps: cfgInt(c, "trainer.max_steps"),
    valEvery,
    limitValBatches: limitBatches(at(c, "trainer.limit_val_batches"), undefined),
    limitTestBatches: limitBatches(at(c, "trainer.limit_test_batches"), undefined),
    logEvery: Math.max(1, cfgInt(c, "trainer.log_every_n_steps", 50)),
    ckptEvery: cfgInt(c, "callbacks.model_checkpoint.every_n_train_steps", 0),
    keepCheckpoints: Math.max(2, topK + 1),
    checkpointDir: resolve(
      cwd,
      typeof dirpath === "string" && dirpath ? dirpath : join("checkpoints", name),
    ),
    runDir: resolve(
      cwd,
      typeof runDirCfg === "string" && runDirCfg ? runDirCfg : join("logs", "runs", name, stamp),
    ),
    resume: Boolean(at(c, "resume")),
    doTest: Boolean(at(c, "do_test") ?? true) && Boolean(at(c, "test_after_training") ?? true),
    lr: cfgNum(c, "train.optimizer.lr"),
    betas: betas as [number, number],
    eps: cfgNum(c, "train.optimizer.eps", 1e-8),
    weightDecay: cfgNum(c, "train.optimizer.weight_decay", 0),
    scheduler: cfgMap(c, "train.scheduler", {}) as Obj,
    grouping: at(c, "train.optimizer_param_grouping") == null
      ? null
      : cfgMap(c, "train.optimizer_param_grouping", {}) as Obj,
    clipNorm: typeof clip === "number" && clip > 0 ? clip : Infinity,
    modelConfig,
    model,
    quiet: Boolean(at(c, "quiet")),
    profile: Boolean(at(c, "profile")),
    precision: String(at(c, "trainer.precision") ?? "32"),
  };
}
