/**
 * `based parity DIR --precision 16-mixed`: the parity cases that run the
 * model's own code (the three mixer modules, the full model, AdamW steps)
 * run in f16 mixed precision, as training does: an Autocast (f16 GEMM
 * inputs, f16 weight copies) and a loss scaler (the model's gradients carry
 * the scale 2^16, removed exactly on read, and GradClip unscales for AdamW).
 * The kernel-only cases (linear attention, feature map, sliding-window core)
 * have no f16 path and keep their fp32 tolerances.
 *
 * Their tolerances: the fixture's fp32 tolerance plus an f16 term. Rounding a
 * GEMM input to f16 changes it by at most u16 = 2^-11 relative; a tensor that
 * depends on G such roundings along its path (forward and backward) moves by
 * about G·u16 relative to its magnitude when the network does not amplify
 * errors (a well-conditioned, normalised network). We allow AMPLIFY times
 * that: rtol and rel_l2 grow by AMPLIFY·G·u16, atol by AMPLIFY·G·u16 times
 * the reference's RMS (near-zero elements are judged against the tensor's
 * scale, not their own). G is counted per case from its structure. A GEMM
 * that sums runs of P products in f16 before flushing into f32
 * (gemmF16PartialSums) adds their rounding, typically √P·u16 (a random
 * walk of P roundings): the f16 term is multiplied by 1 + √P.
 */
import type { Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import { Autocast, setAutocast } from "../kernels/f16/autocast.ts";
import { LossScaler } from "../optim/scaler.ts";
import { F16_EPS } from "../tensor/f16.ts";
import { gemmF16PartialSums } from "../kernels/f16/gemm.ts";

/** The amplification allowed over the direct rounding error (see the module comment). */
export const AMPLIFY = 4;

export interface ParityTolerance {
  atol: number;
  rtol: number;
  rel_l2: number;
}

/** The f16 tolerance of a tensor downstream of `roundings` f16 roundings. */
export function f16Tolerance(
  tol: ParityTolerance,
  ref: ArrayLike<number>,
  roundings: number,
): ParityTolerance {
  let ss = 0;
  for (let i = 0; i < ref.length; i++) ss += ref[i] * ref[i];
  const rms = Math.sqrt(ss / Math.max(1, ref.length));
  // a GEMM that sums runs of P products in f16 adds their rounding: typically √P·u16 (kernels/f16)
  const r = AMPLIFY * roundings * F16_EPS *
    (1 + Math.sqrt(active ? gemmF16PartialSums(active.engine) : 0));
  return { atol: tol.atol + r * rms, rtol: tol.rtol + r, rel_l2: tol.rel_l2 + r };
}

let active: ParityF16 | null = null;

/** The f16 state of the parity run in progress, or null (fp32). */
export function parityF16(): ParityF16 | null {
  return active;
}

/** The f16 state of a parity run: active from start() to stop(). */
export class ParityF16 {
  readonly scaler: LossScaler;
  readonly autocast: Autocast;
  private constructor(readonly engine: Engine) {
    this.scaler = new LossScaler(engine);
    this.autocast = new Autocast(engine, this.scaler.state);
  }
  static start(e: Engine): ParityF16 {
    if (!e.hasF16) {
      throw new BasedError(
        `this adapter (${e.info.name}) has no shader-f16, which --precision 16-mixed needs`,
        "run parity in fp32 (without --precision)",
      );
    }
    active = new ParityF16(e);
    setAutocast(active.autocast);
    return active;
  }
  /** The current loss scale (model gradients are divided by it). */
  async scale(): Promise<number> {
    return (await this.scaler.read()).scale;
  }
  stop(): void {
    if (active === this) active = null;
    setAutocast(null);
    this.autocast.destroy();
    this.scaler.destroy();
  }
}

/**
 * AdamW parameter values after `t` steps, f16 against fp32: near-zero gradients can change
 * sign under f16 rounding, and Adam's update (m̂/(√v̂+ε), ±1 at step 1 whatever |g|) then moves
 * the parameter the other way. Per element, step s moves it by at most lr·M_s with
 * M_s = (1−β1)/√(1−β2) · √(Σ_{k<s} (β1²/β2)^k) · √(1−β2^s)/(1−β1^s) (Cauchy–Schwarz on m_s
 * against v_s; M_1 = 1), so two runs differ by at most 2·lr·Σ_{s≤t} M_s: an absolute term added
 * to those values' tolerance (weight decay's own difference is second order).
 */
export function adamDriftBound(lr: number, betas: [number, number], t: number): number {
  const [b1, b2] = betas;
  let sum = 0;
  for (let s = 1; s <= t; s++) {
    let geo = 0;
    for (let k = 0; k < s; k++) geo += (b1 * b1 / b2) ** k;
    sum += (1 - b1) / Math.sqrt(1 - b2) * Math.sqrt(geo) * Math.sqrt(1 - b2 ** s) / (1 - b1 ** s);
  }
  return 2 * lr * sum;
}
