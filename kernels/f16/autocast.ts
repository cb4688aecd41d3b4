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
 *   An activation is cast once while its f16 copy is alive: the three
 *   projections of linear attention share one saved copy of their input, a
 *   linear layer and the op before it one copy of the tensor between them;
 * - the saved-tensor hooks (tensor/tape.ts) while active: the activations ops
 *   mark packable are kept as f16 copies and widened for their backward when
 *   the copy is exact, i.e. the op's input came through `autocastInput`, which
 *   rounds it to f16 first (in the manner of torch.autocast's casts of conv and
 *   attention inputs), so the op's forward and backward see the same values;
 *   an op marked `inexact` (RMSNorm's input, the f32 residual stream) has its
 *   copy rounded, its statistics kept f32.
 * Everything else (normalisation statistics, softmax, cross-entropy, the
 * linear-attention normaliser, cumulative sums, gradients, optimizer state)
 * stays f32.
 */
import type { Engine } from "../../tensor/engine.ts";
import { isGradEnabled, record, type SavedHooks, setSavedHooks } from "../../tensor/tape.ts";
import { keep, type Storage, Tensor } from "../../tensor/tensor.ts";
import { castToF16, castToF32 } from "./cast.ts";

export class Autocast {
  #version = 0;
  readonly #weights = new Map<Tensor, { w16: Tensor; version: number }>();
  /** f32 activation storage -> a handle (possibly disposed) on its f16 copy's storage */
  readonly #casts = new WeakMap<Storage, Tensor>();
  /** storages of round()'s results: f32 values that f16 holds exactly */
  readonly #rounded = new WeakSet<Storage>();

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

  /**
   * An activation rounded to f16 (training: an Inf/NaN result marks the step as overflowed).
   * While an earlier copy of the same storage is still held (e.g. saved for backward), that
   * copy is returned (a new handle): activations are not written after they are made.
   */
  cast(x: Tensor): Tensor {
    const c = this.#casts.get(x.storage);
    if (c && c.storage.refs > 0 && c.size === x.size) {
      c.storage.retain();
      return new Tensor(c.storage, x.shape, "f16");
    }
    const y = this.#castNew(x);
    this.#casts.set(x.storage, y);
    return y;
  }

  #castNew(x: Tensor): Tensor {
    return this.#flagged() ? castToF16(x, { state: this.state, flag: true }) : castToF16(x);
  }

  /** A gradient rounded to f16 (the loss scale is already in it; Inf/NaN marks the step). */
  castGrad(g: Tensor): Tensor {
    return this.#castNew(g); // gradients are accumulated in place: never shared
  }

  /**
   * x rounded to f16 and widened back (f32, differentiable: the gradient passes through
   * unchanged). An op that computes with this and marks it packable keeps an exact f16 copy.
   */
  round(x: Tensor): Tensor {
    const x16 = this.cast(x);
    const xr = castToF32(x16);
    x16.dispose();
    this.#rounded.add(xr.storage);
    record("f16_round", [x], [xr], [], ([g]) => [g]);
    return xr;
  }

  /** The saved-tensor hooks (tensor/tape.ts): f32 activations kept as f16, widened for backward. */
  readonly savedHooks: SavedHooks = {
    pack: (t, inexact) => {
      if (t.dtype !== "f32" || !(inexact || this.#rounded.has(t.storage))) return null;
      const c = this.cast(t);
      const kept = c.ref(); // owned by the tape, out of any scope
      c.dispose();
      return kept;
    },
    unpack: (t) => castToF32(t),
  };

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

/** Activates `ac` (null: fp32) and its saved-tensor hooks; returns the previous context. */
export function setAutocast(ac: Autocast | null): Autocast | null {
  const prev = current;
  current = ac;
  setSavedHooks(ac ? ac.savedHooks : null);
  return prev;
}

/**
 * An op's input under f16 mixed precision: rounded to f16 (as f32) while an Autocast is
 * active (see Autocast.round), else x itself. Ops fed this mark it packable.
 */
export function autocastInput(x: Tensor): Tensor {
  return current ? current.round(x) : x;
}
