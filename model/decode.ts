/**
 * The recurrent view of a Based model for generation (docs/reference.md,
 * Generation; the reference's `recurrent_forward` / `step` of each mixer): a parallel
 * prefill of the prompt that also fills each layer's state, then one token per
 * step through that state instead of re-running the forward over the context.
 *
 * State per layer: BaseConv — the last K−1 inputs of the short conv;
 * LinearAttention — Σ v φ(k)ᵀ and Σ φ(k) (with fixed_decay: the numerator's
 * state decayed by r_h per token, the row normalisation in closed form);
 * SlidingAttention / MHA — a ring cache of the last ⌊W/2⌋+1 rotated keys and
 * values (MHA: of every position up to the capacity). Batch B > 1 decodes B
 * sequences of the same length in lockstep.
 */
import type { Engine } from "../tensor/engine.ts";
import { keep, type Tensor, tidy } from "../tensor/tensor.ts";
import { noGrad } from "../tensor/tape.ts";
import type { BasedConfig, MixerConfig } from "./config.ts";
import { type BasedLM, EMBEDDING } from "./based.ts";
import { decayProjScale, type Weights } from "./mixers.ts";
import { addRmsNorm } from "../kernels/rmsnorm.ts";
import { narrow, reshape, split } from "../kernels/layout.ts";
import { embedding } from "../kernels/embedding.ts";
import { linear as tiledLinear } from "../kernels/matmul/mod.ts";
import { gemv, gemvFits } from "../kernels/gemv.ts";
import { swiglu } from "../kernels/elementwise.ts";
import { causalConv1d } from "../kernels/conv1d.ts";
import {
  type DecayCursor,
  decayPrefill,
  decayStep,
  linearAttention,
  linearAttentionPrefill,
  type LinearAttentionState,
  linearAttentionState,
  linearAttentionStep,
  resolveView,
} from "../kernels/linear_attention/mod.ts";
import { slidingWindowAttention } from "../kernels/sliding_window.ts";
import { rotaryQK } from "../kernels/rotary.ts";
import {
  convStepGated,
  convTail,
  kvCacheWrite,
  swigluHalves,
  windowAttendStep,
} from "../kernels/decode.ts";

/** Linear layer of the decoder: the skinny kernel for one token per sequence. */
function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const K = x.shape[x.rank - 1];
  return gemvFits(x.size / K, K) ? gemv(x, w, bias) : tiledLinear(x, w, bias);
}

type LayerState =
  | { kind: "conv"; tail: Tensor | null }
  | { kind: "linear"; la: LinearAttentionState; decay: DecayCursor | null }
  | { kind: "attn"; kc: Tensor; vc: Tensor; left: number };

/** Ring-cache slots of an attention layer for sequences up to `capacity` tokens. */
export function cacheSlots(m: MixerConfig, capacity: number): number {
  return Number.isFinite(m.window) ? Math.min(Math.floor(m.window / 2) + 1, capacity) : capacity;
}

/** Bytes of generation state per sequence (f32), for the bandwidth figures. */
export function stateBytesPerSequence(c: BasedConfig, capacity: number): number {
  let n = 0;
  for (const m of c.layers) {
    if (m.kind === "conv") n += (m.kernelSize - 1) * (m.expandProj * c.nEmbd) / 2;
    else if (m.kind === "linear") {
      n += m.numHeads * (m.headDim + 1) * (1 + m.featureDim + m.featureDim ** 2);
    } else n += 2 * cacheSlots(m, capacity) * c.nEmbd;
  }
  return 4 * n;
}

export class Decoder {
  readonly #layers: LayerState[];
  #pos = 0;
  readonly e: Engine;
  readonly c: BasedConfig;

  /** `capacity`: the most tokens (prompt + generated) one sequence will hold. */
  constructor(readonly model: BasedLM, readonly B: number, readonly capacity: number) {
    this.e = model.engine;
    this.c = model.config;
    const d = this.c.nEmbd;
    this.#layers = this.c.layers.map((m): LayerState => {
      if (m.kind === "conv") return { kind: "conv", tail: null };
      if (m.kind === "linear") {
        const la = linearAttentionState(B, m.numHeads, m.featureDim, m.headDim);
        keep(la.kv);
        keep(la.k);
        const decay = m.decay ? { o: m.decay, n: capacity + 1, pos: 0 } : null;
        return { kind: "linear", la, decay };
      }
      const S = cacheSlots(m, capacity);
      const kc = keep(this.e.empty([B, S, m.numHeads, d / m.numHeads], "f32", "kv cache"));
      const vc = keep(this.e.empty([B, S, m.numHeads, d / m.numHeads], "f32", "kv cache"));
      const left = Number.isFinite(m.window) ? Math.floor(m.window / 2) : capacity;
      return { kind: "attn", kc, vc, left };
    });
  }

  /** Tokens consumed so far per sequence. */
  get position(): number {
    return this.#pos;
  }

  /** Runs the prompt ids [B·L] (row-major) in parallel; returns the last position's logits [B, Vpad]. */
  prefill(ids: Int32Array, L: number): Tensor {
    if (this.#pos !== 0) throw new Error("Decoder.prefill: the state is not empty");
    return this.#run(ids, L, true);
  }

  /** One token per sequence (ids [B]); returns its logits [B, Vpad]. */
  step(ids: Int32Array): Tensor {
    if (this.#pos === 0) throw new Error("Decoder.step: prefill first");
    return this.#run(ids, 1, false);
  }

  #run(ids: Int32Array, L: number, parallel: boolean): Tensor {
    const { B, c } = this;
    if (ids.length !== B * L || L < 1) {
      throw new Error(`Decoder: ${ids.length} ids for batch ${B} x ${L}`);
    }
    if (this.#pos + L > this.capacity) {
      throw new Error(`Decoder: ${this.#pos + L} tokens exceed the capacity ${this.capacity}`);
    }
    const out = noGrad(() =>
      tidy(() => {
        const idsT = this.e.tensor(ids, [B, L], "i32");
        let h = embedding(this.model.p(EMBEDDING), idsT, ids);
        let residual: Tensor | null = null;
        for (let i = 0; i < c.nLayer; i++) {
          const pre = `transformer.layers.${i}`;
          const w: Weights = (n) => this.model.p(`${pre}.mixer.${n}`);
          const [r, x] = addRmsNorm(h, residual, this.model.p(`${pre}.norm1.weight`), c.normEps);
          const a = this.#mixer(i, c.layers[i], w, reshape(x, [B, L, c.nEmbd]), L, parallel);
          const [r2, x2] = addRmsNorm(a, r, this.model.p(`${pre}.norm2.weight`), c.normEps);
          // fc2(value ⊙ silu(gate)), [value | gate] = fc1(x2) (mixers.ts mlpForward, fused)
          const hid = swigluHalves(linear(x2, this.model.p(`${pre}.mlp.fc1.weight`)));
          h = linear(hid, this.model.p(`${pre}.mlp.fc2.weight`));
          residual = r2;
        }
        const [, y] = addRmsNorm(h, residual, this.model.p("transformer.ln_f.weight"), c.normEps);
        const last = L === 1 ? y : narrow(reshape(y, [B, L, c.nEmbd]), 1, L - 1, 1);
        return linear(reshape(last, [B, c.nEmbd]), this.model.p(EMBEDDING));
      })
    );
    this.#pos += L;
    return out;
  }

  #mixer(i: number, m: MixerConfig, w: Weights, x: Tensor, L: number, par: boolean): Tensor {
    const { B, c } = this;
    const st = this.#layers[i];
    const pos = this.#pos;
    if (st.kind === "conv") {
      const inner = (m.expandProj * c.nEmbd) / 2;
      const z = linear(x, w("in_proj.weight"), m.useBias ? w("in_proj.bias") : undefined);
      let gated: Tensor;
      if (par) {
        const [u1, u2] = split(z, -1, [inner, inner]);
        gated = swiglu(u2, causalConv1d(u1, w("conv.conv.weight")));
        st.tail?.dispose();
        st.tail = keep(convTail(reshape(u1, [B, L, inner]), m.kernelSize));
      } else gated = convStepGated(st.tail!, z, w("conv.conv.weight"));
      const bias = m.useBias ? w("out_proj.bias") : undefined;
      return linear(gated, w("out_proj.weight"), bias);
    }
    if (st.kind === "linear") {
      const q = reshape(linear(x, w("proj_q.weight")), [B, L, m.numHeads, m.featureDim]);
      const k = reshape(linear(x, w("proj_k.weight")), [B, L, m.numHeads, m.featureDim]);
      const v = reshape(linear(x, w("proj_v.weight")), [B, L, m.numHeads, m.headDim]);
      let y: Tensor;
      if (par) {
        y = linearAttention(q, k, v, {
          view: resolveView(m.view),
          eps: m.eps,
          featureDim: m.featureDim,
          decay: m.decay,
        });
        if (st.decay) decayPrefill(st.la, k, v, st.decay);
        else linearAttentionPrefill(st.la, k, v);
      } else if (st.decay) y = decayStep(st.la, q, k, v, m.eps, st.decay);
      else y = linearAttentionStep(st.la, q, k, v, m.eps);
      if (m.decay?.proj) y = decayProjScale(w, x, y, B, L, m.numHeads, linear);
      return linear(reshape(y, [B, L, m.numHeads * m.headDim]), w("out_proj.weight"));
    }
    const d = c.nEmbd;
    const dh = d / m.numHeads;
    const qkv = reshape(linear(x, w("Wqkv.weight")), [B, L, 3, m.numHeads, dh]);
    const rot = rotaryQK(qkv, {
      base: c.rotaryBase,
      rotaryDim: Math.round(dh * c.rotaryFraction),
      offset: pos,
    });
    kvCacheWrite(rot, st.kc, st.vc, pos);
    let o: Tensor;
    if (par) {
      const window = Number.isFinite(m.window) ? m.window : 2 * L + 2;
      o = slidingWindowAttention(rot, { window, scale: dh ** -0.5 });
    } else o = windowAttendStep(rot, st.kc, st.vc, pos, st.left, dh ** -0.5);
    return linear(reshape(o, [B, L, d]), w("out_proj.weight"));
  }

  dispose(): void {
    for (const s of this.#layers) {
      if (s.kind === "conv") s.tail?.dispose();
      else if (s.kind === "linear") {
        s.la.kv.dispose();
        s.la.k.dispose();
      } else {
        s.kc.dispose();
        s.vc.dispose();
      }
    }
  }
}
