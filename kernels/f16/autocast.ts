/**
 * The f16 mixed-precision context (the counterpart of torch.autocast plus
 * the scaler's found-inf flag): while one is active (`setAutocast`), the
 * model's linear layers and LM head take f16 inputs (kernels/f16/linear.ts,
 * model/lm_head_f16.ts). It owns
 * - the f16 copies of the parameters that GEMMs read: cast on first use after
 *   `newWeights()` (once per optimizer step, shared by every micro-batch and
 *   every use), kept in persistent buffers;
 * - the casts of activations and gradients: in training (gradients recorded)
 *   they set the loss scaler's found-inf word on an Inf/NaN result, and the
 *   gradient of the logits is multiplied by the loss scale as it is rounded.
 * Everything else (normalisation statistics, softmax, cross-entropy, the
 * linear-attention normaliser, cumulative sums, gradients, optimizer state)
 * stays f32.
 */
import type { Engine } from "../../tensor/engine.ts";
import { isGradEnabled } from "../../tensor/tape.ts";
import { keep, type Tensor } from "../../tensor/tensor.ts";
import { castToF16 } from "./cast.ts";

export class Autocast {
  #version = 0;
  readonly #weights = new Map<Tensor, { w16: Tensor; version: number }>();

  /** `state`: the loss scaler's state words (optim/scaler.ts), or null (evaluation only). */
  constructor(readonly engine: Engine, readonly state: Tensor | null) {}

  /** The f16 copy of parameter `w`, cast at most once per `newWeights()`. */
  weight(w: Tensor): Tensor {
    let c = this.#weights.get(w);
    if (c && c.version === this.#version) return c.w16;
    if (!c) {
      c = {
        w16: keep(this.engine.empty(w.shape, "f16", `f16 copy of ${w.name ?? w}`)),
        version: -1,
      };
      this.#weights.set(w, c);
    }
    castToF16(w, { out: c.w16 });
    c.version = this.#version;
    return c.w16;
  }

  /** The parameters changed (an optimizer step, a load): f16 copies are cast again on next use. */
  newWeights(): void {
    this.#version++;
  }

  /** Bytes held by the f16 parameter copies. */
  get weightBytes(): number {
    let n = 0;
    for (const c of this.#weights.values()) n += c.w16.byteLength;
    return n;
  }

  #flagged(): boolean {
    return this.state !== null && isGradEnabled();
  }

  /** An activation rounded to f16 (training: an Inf/NaN result marks the step as overflowed). */
  cast(x: Tensor): Tensor {
    return this.#flagged() ? castToF16(x, { state: this.state, flag: true }) : castToF16(x);
  }

  /** A gradient rounded to f16 (the loss scale is already in it; Inf/NaN marks the step). */
  castGrad(g: Tensor): Tensor {
    return this.cast(g);
  }

  /**
   * The gradient of the logits (unscaled, f32) times the loss scale, rounded to f16 into `out`
   * (training only). Where the loss scale enters the backward pass.
   */
  castScaled(g: Tensor, out: Tensor, count: number): Tensor {
    if (!this.state) throw new Error("Autocast.castScaled: no loss scaler state");
    return castToF16(g, { state: this.state, flag: true, scaled: true, out, count });
  }

  destroy(): void {
    for (const c of this.#weights.values()) c.w16.dispose();
    this.#weights.clear();
  }
}

let current: Autocast | null = null;

/** The active mixed-precision context, or null (fp32). */
export function autocast(): Autocast | null {
  return current;
}

/** Activates `ac` (null: fp32); returns the previous context. */
export function setAutocast(ac: Autocast | null): Autocast | null {
  const prev = current;
  current = ac;
  return prev;
}
