/**
 * Learning-rate schedules (the reference's
 * `train/optim/timm_lr_scheduler.py::TimmCosineLRScheduler`): timm's CosineLRScheduler with warmup
 * (`timm/scheduler/cosine_lr.py::_get_lr`, `t_in_epochs: false`) and a
 * constant schedule. `lrAt(t, s)` is f(t) where t = optimizer steps done so
 * far: optimizer step s (1-based) uses `lrAt(s - 1, sched)`, because the
 * reference scheduler is stepped after every optimizer step
 * (`step_update(num_updates)`), starting from `step(0)` at construction.
 * All arithmetic is float64, as in Python.
 */
import { BasedError } from "../errors.ts";
import type { Obj } from "../config/mod.ts";

export interface ConstantSchedule {
  kind: "constant";
  lr: number;
}

/** timm CosineLRScheduler parameters (timm names in comments). */
export interface CosineSchedule {
  kind: "cosine";
  /** the optimizer's lr (timm `base_values`) */
  baseLr: number;
  /** t_initial: length of the first cosine cycle */
  tInitial: number;
  /** lr_min */
  lrMin: number;
  /** warmup_t */
  warmupT: number;
  /** warmup_lr_init */
  warmupLrInit: number;
  /** warmup_prefix: the cosine starts after the warmup */
  warmupPrefix: boolean;
  /** cycle_mul (timm default 1) */
  cycleMul: number;
  /** cycle_decay, older timm `decay_rate` (default 1) */
  cycleDecay: number;
  /** cycle_limit (default 1) */
  cycleLimit: number;
  /** k_decay (default 1) */
  kDecay: number;
}

export type Schedule = ConstantSchedule | CosineSchedule;

/** The learning rate after `t` optimizer steps (timm `_get_lr(t)`). */
export function lrAt(t: number, s: Schedule): number {
  if (s.kind === "constant") return s.lr;
  if (t < s.warmupT) {
    const slope = (s.baseLr - s.warmupLrInit) / s.warmupT;
    return s.warmupLrInit + t * slope;
  }
  if (s.warmupPrefix) t = t - s.warmupT;
  let i: number, tI: number, tCurr: number;
  if (s.cycleMul !== 1) {
    i = Math.floor(
      Math.log(1 - (t / s.tInitial) * (1 - s.cycleMul)) / Math.log(s.cycleMul),
    );
    tI = s.cycleMul ** i * s.tInitial;
    tCurr = t - ((1 - s.cycleMul ** i) / (1 - s.cycleMul)) * s.tInitial;
  } else {
    i = Math.floor(t / s.tInitial);
    tI = s.tInitial;
    tCurr = t - s.tInitial * i;
  }
  if (i < s.cycleLimit) {
    const lrMax = s.baseLr * s.cycleDecay ** i;
    const k = s.kDecay;
    return s.lrMin +
      0.5 * (lrMax - s.lrMin) * (1 + Math.cos((Math.PI * tCurr ** k) / tI ** k));
  }
  return s.lrMin;
}

/** A constant schedule (Lightning without a scheduler). */
export function constantSchedule(lr: number): ConstantSchedule {
  if (!(lr >= 0) || !Number.isFinite(lr)) {
    throw new BasedError(`the learning rate must be a finite number ≥ 0, got ${lr}`);
  }
  return { kind: "constant", lr };
}

/**
 * The schedule of a config. `section` is either the whole `train` section
 * (`{optimizer: {lr}, scheduler: {...}}`) or the `train.scheduler` section
 * alone, in which case `baseLr` (train.optimizer.lr) is required. A missing,
 * null or empty scheduler gives the constant schedule at the base lr.
 */
export function scheduleFromConfig(section: Obj | null | undefined, baseLr?: number): Schedule {
  let sched: unknown = section;
  let lr = baseLr;
  if (
    section && typeof section === "object" && ("scheduler" in section || "optimizer" in section)
  ) {
    sched = section.scheduler;
    const opt = section.optimizer as Obj | undefined;
    if (lr === undefined && opt && typeof opt === "object" && typeof opt.lr === "number") {
      lr = opt.lr;
    }
  }
  if (lr === undefined) {
    throw new BasedError(
      "scheduleFromConfig: no base learning rate",
      "pass the whole `train` section or train.optimizer.lr as the second argument",
    );
  }
  if (!(typeof lr === "number" && Number.isFinite(lr) && lr >= 0)) {
    throw new BasedError(`train.optimizer.lr must be a finite number ≥ 0, got ${lr}`);
  }
  if (sched === null || sched === undefined) return constantSchedule(lr);
  if (typeof sched !== "object" || Array.isArray(sched)) {
    throw new BasedError(`train.scheduler must be a mapping, got ${JSON.stringify(sched)}`);
  }
  const s = sched as Obj;
  if (Object.keys(s).length === 0) return constantSchedule(lr);
  const target = typeof s._target_ === "string" ? s._target_ : "";
  if (!/Cosine/i.test(target) && !("t_initial" in s)) {
    throw new BasedError(
      `train.scheduler: unsupported scheduler '${target || JSON.stringify(s)}'`,
      "use the timm cosine scheduler (scheduler: cosine-warmup-timm) or no scheduler",
    );
  }
  if (s.t_in_epochs === true) {
    throw new BasedError(
      "train.scheduler.t_in_epochs: true is not supported (the schedule is stepped per optimizer step)",
      "set train.scheduler.t_in_epochs: false",
    );
  }
  const num = (k: string, def?: number): number => {
    const v = s[k] ?? def;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new BasedError(
        v === undefined
          ? `train.scheduler.${k} is required`
          : `train.scheduler.${k} must be a number, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const out: CosineSchedule = {
    kind: "cosine",
    baseLr: lr,
    tInitial: num("t_initial"),
    lrMin: num("lr_min", 0),
    warmupT: num("warmup_t", 0),
    warmupLrInit: num("warmup_lr_init", 0),
    warmupPrefix: Boolean(s.warmup_prefix ?? false),
    cycleMul: num("cycle_mul", 1),
    cycleDecay: num("cycle_decay", num("decay_rate", 1)),
    cycleLimit: num("cycle_limit", 1),
    kDecay: num("k_decay", 1),
  };
  if (!(out.tInitial > 0)) {
    throw new BasedError(`train.scheduler.t_initial must be > 0, got ${out.tInitial}`);
  }
  if (out.warmupT < 0) {
    throw new BasedError(`train.scheduler.warmup_t must be ≥ 0, got ${out.warmupT}`);
  }
  if (s.noise_range_t !== undefined && s.noise_range_t !== null) {
    throw new BasedError("train.scheduler.noise_range_t (lr noise) is not supported");
  }
  return out;
}
