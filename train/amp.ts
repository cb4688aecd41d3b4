/**
 * `trainer.precision` for the trainer: which values mean what, the adapter
 * check, and the f16 mixed-precision state of a run (the loss scaler and the
 * autocast context), with the hooks the training loop calls.
 *
 * | trainer.precision            | runs                                              |
 * |------------------------------|---------------------------------------------------|
 * | 32, 32-true (default)        | fp32 everywhere                                   |
 * | 16, 16-mixed                 | f16 mixed precision with dynamic loss scaling     |
 * | bf16, bf16-mixed             | the same f16 mode (WebGPU has no bf16), said once |
 */
import type { Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import { cfgGet, type Config } from "../config/mod.ts";
import { Autocast, setAutocast } from "../kernels/f16/autocast.ts";
import { LossScaler, type ScalerOptions, type ScalerState } from "../optim/scaler.ts";

export type Precision = "32-true" | "16-mixed";

/** The accepted values, as the error lists them. */
export const PRECISION_VALUES = ["32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed"];

/** Skipped steps in a row after which the run stops (the scale has fallen by 2^this). */
export const MAX_CONSECUTIVE_SKIPS = 30;

/** Parses trainer.precision; `note` is the line to print when the value is not run as written. */
export function parsePrecision(v: unknown): { precision: Precision; note: string | null } {
  const s = v === undefined || v === null ? "32" : String(v);
  if (s === "32" || s === "32-true") return { precision: "32-true", note: null };
  if (s === "16" || s === "16-mixed") return { precision: "16-mixed", note: null };
  if (s === "bf16" || s === "bf16-mixed") {
    return {
      precision: "16-mixed",
      note: `trainer.precision=${s}: WebGPU has no bf16; running f16 mixed precision ` +
        "(16-mixed, dynamic loss scaling) instead",
    };
  }
  throw new BasedError(
    `trainer.precision ${JSON.stringify(v)} is not supported; use one of ${
      PRECISION_VALUES.join(", ")
    }`,
  );
}

/**
 * What runs on this adapter, and the line to print (or null). bf16 (the
 * reference experiments' value, already a substitution) on an adapter with
 * neither bf16 nor shader-f16 (e.g. Mesa's GL path) runs fp32, said in one
 * line; an explicit 16-mixed there fails in MixedPrecision.create.
 */
export function precisionForAdapter(
  p: { precision: Precision; note: string | null },
  adapter: { hasF16: boolean; name: string },
): { precision: Precision; line: string | null } {
  if (p.precision === "16-mixed" && p.note !== null && !adapter.hasF16) {
    return {
      precision: "32-true",
      line: `trainer.precision: WebGPU has no bf16 and this adapter (${adapter.name}) has no ` +
        "shader-f16 for f16 mixed precision: running fp32 (32-true)",
    };
  }
  return { precision: p.precision, line: p.note };
}

/** Fails (one line) when the adapter cannot run f16 mixed precision. */
export function requireF16(e: Engine): void {
  if (!e.hasF16) {
    throw new BasedError(
      `this adapter (${e.info.name}) has no shader-f16, which f16 mixed precision needs`,
      "run in fp32 with trainer.precision=32",
    );
  }
}

/** The config with trainer.precision set to what runs (for the run's config.yaml). */
export function withPrecision(cfg: Config, precision: Precision): Config {
  const c = structuredClone(cfg) as Record<string, unknown>;
  const t = (c.trainer ?? {}) as Record<string, unknown>;
  c.trainer = { ...t, precision };
  return c as Config;
}

/** The optional `train.grad_scaler` keys (torch GradScaler's argument names). */
export function scalerOptions(cfg: Config): ScalerOptions {
  const m = cfgGet<Record<string, unknown> | null>(cfg, "train.grad_scaler", null) ?? {};
  const num = (k: string) => {
    const v = m[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number") {
      throw new BasedError(`train.grad_scaler.${k} must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  return {
    initScale: num("init_scale"),
    growthFactor: num("growth_factor"),
    backoffFactor: num("backoff_factor"),
    growthInterval: num("growth_interval"),
  };
}

/** A run's f16 mixed-precision state: active from create() until destroy(). */
export class MixedPrecision {
  private constructor(readonly scaler: LossScaler, readonly autocast: Autocast) {}

  static create(e: Engine, opts: ScalerOptions = {}): MixedPrecision {
    requireF16(e);
    const scaler = new LossScaler(e, opts);
    const mp = new MixedPrecision(scaler, new Autocast(e, scaler.state));
    setAutocast(mp.autocast);
    return mp;
  }

  /** After every change of the parameters (optimizer step, load): f16 copies are re-cast. */
  newWeights(): void {
    this.autocast.newWeights();
  }

  /** The scaler's state (a GPU wait: logging steps and checkpoints). */
  read(): Promise<ScalerState> {
    return this.scaler.read();
  }

  /** Restores a checkpoint's scaler state (absent, e.g. an fp32 checkpoint: the initial state). */
  load(s: unknown): void {
    if (s !== undefined && s !== null) this.scaler.load(s as ScalerState);
    this.newWeights();
  }

  /** Fails when the gradients have overflowed for MAX_CONSECUTIVE_SKIPS steps in a row. */
  check(s: ScalerState, step: number, keep: string): void {
    if (s.consecutive_skipped < MAX_CONSECUTIVE_SKIPS) return;
    throw new BasedError(
      `the gradients were non-finite in ${s.consecutive_skipped} consecutive steps up to step ` +
        `${step} (all skipped; loss scale now ${s.scale})`,
      `lower train.optimizer.lr, or run in fp32 with trainer.precision=32; ${keep}`,
    );
  }

  destroy(): void {
    setAutocast(null);
    this.autocast.destroy();
    this.scaler.destroy();
  }
}

/**
 * Evaluation in a precision: `value` (eval --precision) or else the checkpoint config's
 * trainer.precision. f16 activates an Autocast without a scaler; returns what runs and a stop.
 */
export function evalPrecision(
  e: Engine,
  value: unknown,
  log: (s: string) => void,
): { precision: Precision; stop: () => void } {
  const p = parsePrecision(value);
  if (p.note) log(p.note);
  if (p.precision === "32-true") return { precision: p.precision, stop: () => {} };
  requireF16(e);
  const ac = new Autocast(e, null);
  setAutocast(ac);
  return {
    precision: p.precision,
    stop: () => {
      setAutocast(null);
      ac.destroy();
    },
  };
}
