/**
 * The training settings read from a resolved config, typed and checked, with
 * Lightning's defaults where the config leaves a key out.
 */
import { join, resolve } from "node:path";
import { BasedError } from "../errors.ts";
import { cfgGet, cfgInt, cfgMap, cfgNum, type Config, type Obj } from "../config/mod.ts";
import { checkSequenceLength } from "./preflight.ts";
import { parsePrecision, type Precision } from "./amp.ts";
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
  limitValBatches: BatchLimit;
  limitTestBatches: BatchLimit;
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
  /** what runs: trainer.precision parsed (train/amp.ts) */
  precision: Precision;
  /** the line to print when trainer.precision is not run as written (bf16), else null */
  precisionNote: string | null;
}

/** The value at a dotted key, undefined when absent. */
const at = (cfg: Config, path: string): unknown => cfgGet<unknown>(cfg, path, undefined);

/**
 * Lightning's limit_*_batches: an int is a batch count (0 = none), a float in
 * [0, 1] a fraction of the batches (1.0 = all). An integral float arrives as
 * its text ("1.0"; config/util.ts INT_OR_FLOAT_KEYS).
 */
export type BatchLimit = { count: number } | { fraction: number } | undefined;

function limitBatches(v: unknown, key: string): BatchLimit {
  if (v === undefined || v === null) return undefined;
  let n = v, float = typeof v === "number" && !Number.isInteger(v);
  if (typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v)) n = Number(v);
  else if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) {
    n = Number(v);
    float = true;
  }
  const bad = (why: string): never => {
    throw new BasedError(
      `${key} must be ${why}, got ${JSON.stringify(v)}`,
      "an int is a batch count (0 = none), a float in [0.0, 1.0] a fraction (1.0 = all)",
    );
  };
  if (typeof n !== "number") return bad("a number");
  if (n < 0) return bad("≥ 0");
  if (!float) return { count: n };
  if (n > 1) return bad("≤ 1.0 when a float");
  return n === 1 ? undefined : { fraction: n };
}

/** How many batches of a split of `batches` batches a limit allows (undefined: all). */
export function batchCount(limit: BatchLimit, batches: number, key: string): number | undefined {
  if (limit === undefined) return undefined;
  if ("count" in limit) return limit.count;
  const n = Math.floor(limit.fraction * batches);
  if (n === 0 && limit.fraction > 0) {
    throw new BasedError(
      `${key}=${limit.fraction} is less than one of the split's ${batches} batches`,
      `set ${key} to at least ${(1 / batches).toPrecision(2)}, or to an int (a batch count)`,
    );
  }
  return n;
}

/**
 * A cosine schedule whose t_initial (the example experiments derive it as
 * trainer.max_steps − warmup_t) is not positive: name the keys that set it.
 * (The warm-up is not shortened silently: the run would differ from its config.)
 */
function checkWarmup(c: Config): void {
  const tInit = at(c, "train.scheduler.t_initial"), warm = at(c, "train.scheduler.warmup_t");
  const steps = at(c, "trainer.max_steps");
  if (typeof tInit !== "number" || tInit > 0) return;
  if (typeof warm === "number" && typeof steps === "number" && warm > 0 && tInit === steps - warm) {
    throw new BasedError(
      `trainer.max_steps ${steps} leaves no steps after the warm-up of ` +
        `train.scheduler.warmup_t ${warm} (train.scheduler.t_initial = ${steps} − ${warm} = ${tInit})`,
      `set trainer.max_steps above ${warm}, or lower train.scheduler.warmup_t below ${steps} ` +
        `(e.g. train.scheduler.warmup_t=${Math.floor(steps / 2)})`,
    );
  }
  throw new BasedError(
    `train.scheduler.t_initial must be > 0, got ${tInit}`,
    "set train.scheduler.t_initial to the number of steps of the cosine phase",
  );
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
  checkWarmup(c);
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
    limitValBatches: limitBatches(at(c, "trainer.limit_val_batches"), "trainer.limit_val_batches"),
    limitTestBatches: limitBatches(
      at(c, "trainer.limit_test_batches"),
      "trainer.limit_test_batches",
    ),
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
    ...(() => {
      const p = parsePrecision(at(c, "trainer.precision"));
      return { precision: p.precision, precisionNote: p.note };
    })(),
  };
}
