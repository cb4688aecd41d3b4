/**
 * The sequence mixers and the MLP of a Based block, as functions of their
 * input and a parameter lookup (names relative to the module, as in the
 * reference's state_dict: `in_proj.weight`, `proj_q.weight`, `Wqkv.weight`...).
 */
import type { Tensor } from "../tensor/tensor.ts";
import type { MixerConfig } from "./config.ts";
import { linear } from "../kernels/f16/linear.ts"; // f16 mixed precision when active
import { reshape, split } from "../kernels/layout.ts";
import { swiglu } from "../kernels/f16/swiglu.ts"; // f16-saved inputs when active
import { causalConv1d } from "../kernels/conv1d.ts";
import { headScale, linearAttention } from "../kernels/linear_attention/mod.ts";
import { slidingWindowAttention } from "../kernels/sliding_window.ts";
import { rotaryQK } from "../kernels/rotary.ts";
// f16 mixed precision: the inputs of the convolution and the attentions are rounded to f16 and
// kept as f16 for backward (the normaliser, softmax statistics and outputs stay f32)
import { autocastInput as f16In } from "../kernels/f16/autocast.ts";

export type Weights = (name: string) => Tensor;

export interface MixerContext {
  nEmbd: number;
  rotaryBase: number;
  rotaryFraction: number;
}

/**
 * BaseConv (`based/models/mixers/convolution.py::BaseConv`): out_proj(silu(conv(u1)) ⊙ u2), [u1 |
 * u2] = in_proj(x).
 */
export function baseConv(m: MixerConfig, w: Weights, x: Tensor, d: number): Tensor {
  const inner = (m.expandProj * d) / 2;
  const z = linear(x, w("in_proj.weight"), m.useBias ? w("in_proj.bias") : undefined);
  const [u1, u2] = split(z, -1, [inner, inner]);
  const conv = causalConv1d(f16In(u1), w("conv.conv.weight"));
  return linear(swiglu(u2, conv), w("out_proj.weight"), m.useBias ? w("out_proj.bias") : undefined);
}

/**
 * LinearAttention with the Taylor feature map
 * (`based/models/mixers/linear_attention.py::LinearAttention`), in the configured training view.
 */
export function linearAttentionMixer(
  m: MixerConfig,
  w: Weights,
  x: Tensor,
  B: number,
  L: number,
): Tensor {
  const q = reshape(linear(x, w("proj_q.weight")), [B, L, m.numHeads, m.featureDim]);
  const k = reshape(linear(x, w("proj_k.weight")), [B, L, m.numHeads, m.featureDim]);
  const v = reshape(linear(x, w("proj_v.weight")), [B, L, m.numHeads, m.headDim]);
  let y = linearAttention(f16In(q), f16In(k), f16In(v), {
    view: m.view,
    eps: m.eps,
    featureDim: m.featureDim,
    decay: m.decay,
  });
  if (m.decay?.proj) y = decayProjScale(w, x, y, B, L, m.numHeads);
  return linear(reshape(y, [B, L, m.numHeads * m.headDim]), w("out_proj.weight"));
}

/** decay_proj: y[b, i, h, :] scaled by p = decay_proj(x)[b, i, h] (the data-dependent decay). */
export function decayProjScale(
  w: Weights,
  x: Tensor,
  y: Tensor,
  B: number,
  L: number,
  H: number,
  lin: (x: Tensor, w: Tensor, b?: Tensor) => Tensor = linear,
): Tensor {
  const p = lin(x, w("decay_proj.weight"), w("decay_proj.bias"));
  return headScale(y, reshape(p, [B, L, H]));
}

/**
 * SlidingAttention (`based/models/mixers/slide_attention.py::SlidingAttention`): rotary q, k;
 * softmax over keys i − window/2 … i. Also full MHA.
 */
export function slidingMixer(
  m: MixerConfig,
  w: Weights,
  x: Tensor,
  B: number,
  L: number,
  ctx: MixerContext,
): Tensor {
  const d = ctx.nEmbd;
  const dh = d / m.numHeads;
  const qkv = reshape(linear(x, w("Wqkv.weight")), [B, L, 3, m.numHeads, dh]);
  const rot = rotaryQK(qkv, {
    base: ctx.rotaryBase,
    rotaryDim: Math.round(dh * ctx.rotaryFraction),
  });
  const window = Number.isFinite(m.window) ? m.window : 2 * L + 2;
  const o = slidingWindowAttention(f16In(rot), { window, scale: dh ** -0.5 });
  return linear(reshape(o, [B, L, d]), w("out_proj.weight"));
}

export function mixerForward(
  m: MixerConfig,
  w: Weights,
  x: Tensor,
  B: number,
  L: number,
  ctx: MixerContext,
): Tensor {
  switch (m.kind) {
    case "conv":
      return baseConv(m, w, x, ctx.nEmbd);
    case "linear":
      return linearAttentionMixer(m, w, x, B, L);
    case "slide":
    case "mha":
      return slidingMixer(m, w, x, B, L, ctx);
  }
}

/**
 * SwiGLU MLP (`based/models/mlp.py::GatedMlp`): fc2(value ⊙ silu(gate)), [value | gate] = fc1(x).
 */
export function mlpForward(w: Weights, x: Tensor, hidden: number): Tensor {
  const h = linear(x, w("fc1.weight"));
  const [value, gate] = split(h, -1, [hidden, hidden]);
  return linear(swiglu(value, gate), w("fc2.weight"));
}
