/**
 * The training settings read from a resolved config, typed and checked, with
 * Lightning's defaults where the config leaves a key out.
 */
import { join, resolve } from "node:path";
import { BasedError } from "../tensor/errors.ts";
import type { Config } from "../config/mod.ts";
import { checkSequenceLength } from "./preflight.ts";

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
  modelConfig: Record<string, unknown>;
  quiet: boolean;
  /** +profile=true: GPU time per kernel kind of one step */
  profile: boolean;
  precision: string;
}

type Obj = Record<string, unknown>;

function at(cfg: Obj, path: string): unknown {
  let v: unknown = cfg;
  for (const k of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Obj)[k];
  }
  return v;
}

function num(cfg: Obj, path: string, def?: number): number {
  const v = at(cfg, path);
  if (v === undefined || v === null) {
    if (def === undefined) throw new BasedError(`config key ${path} is required`);
    return def;
  }
  if (typeof v !== "number" || Number.isNaN(v)) {
    throw new BasedError(`config key ${path} must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function int(cfg: Obj, path: string, def?: number): number {
  const v = num(cfg, path, def);
  if (!Number.isInteger(v)) throw new BasedError(`config key ${path} must be an integer, got ${v}`);
  return v;
}

function obj(cfg: Obj, path: string): Obj {
  const v = at(cfg, path);
  return v && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : {};
}

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
  const c = cfg as Obj;
  const accumulate = int(c, "trainer.accumulate_grad_batches", 1);
  if (accumulate < 1) {
    throw new BasedError(`trainer.accumulate_grad_batches must be ≥ 1, got ${accumulate}`);
  }
  const vci = num(c, "trainer.val_check_interval", 1.0);
  // counted in micro-batches (spec §4.5); fractions of an epoch are resolved by the loop's caller
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
  const topK = int(c, "callbacks.model_checkpoint.save_top_k", 1);
  const maxLength = int(c, "datamodule.max_length");
  checkSequenceLength(obj(c, "model.config"), maxLength);
  return {
    seed: typeof seed === "number" ? seed : 0,
    dataSeed: typeof seed === "number" ? seed : 0,
    maxLength,
    batchSize: int(c, "datamodule.batch_size"),
    batchSizeEval: int(c, "datamodule.batch_size_eval", int(c, "datamodule.batch_size")),
    accumulate,
    devices: int(c, "trainer.devices", 1),
    maxSteps: int(c, "trainer.max_steps"),
    valEvery,
    limitValBatches: limitBatches(at(c, "trainer.limit_val_batches"), undefined),
    limitTestBatches: limitBatches(at(c, "trainer.limit_test_batches"), undefined),
    logEvery: Math.max(1, int(c, "trainer.log_every_n_steps", 50)),
    ckptEvery: int(c, "callbacks.model_checkpoint.every_n_train_steps", 0),
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
    lr: num(c, "train.optimizer.lr"),
    betas: betas as [number, number],
    eps: num(c, "train.optimizer.eps", 1e-8),
    weightDecay: num(c, "train.optimizer.weight_decay", 0),
    scheduler: obj(c, "train.scheduler"),
    grouping: at(c, "train.optimizer_param_grouping") == null
      ? null
      : obj(c, "train.optimizer_param_grouping"),
    clipNorm: typeof clip === "number" && clip > 0 ? clip : Infinity,
    modelConfig: obj(c, "model.config"),
    quiet: Boolean(at(c, "quiet")),
    profile: Boolean(at(c, "profile")),
    precision: String(at(c, "trainer.precision") ?? "32"),
  };
}
