/**
 * The model without fixtures: shapes, and a 2-layer Based model (BaseConv,
 * then LinearAttention) against a float64 forward composed from the kernels'
 * float64 references (`*_ref.ts`, matmul/reference.ts, linear_attention/reference.ts):
 * the loss in every linear-attention view, and parameter gradients against
 * central finite differences of that float64 loss.
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { BasedLM, type Batch, EMBEDDING } from "../../model/based.ts";
import { type BasedConfig, modelConfigFromCfg } from "../../model/config.ts";
import { declareParams } from "../../model/params.ts";
import type { Engine } from "../../tensor/engine.ts";
import { backward, noGrad } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import { embedding } from "../../kernels/embedding_ref.ts";
import { addRmsNorm } from "../../kernels/rmsnorm_ref.ts";
import { linear } from "../../kernels/matmul/reference.ts";
import { causalConv1d } from "../../kernels/conv1d_ref.ts";
import { swiglu } from "../../kernels/elementwise_ref.ts";
import { reference as linearAttentionRef } from "../../kernels/linear_attention/reference.ts";
import { crossEntropy } from "../../kernels/cross_entropy_ref.ts";
import { type F64, gpuTest, Rng } from "../helpers.ts";

const B = 2, L = 24;
const cfgFor = (view: string) => ({
  n_embd: 16,
  n_head: 2,
  n_layer: 2,
  n_inner: 32,
  vocab_size: 61,
  pad_vocab_size_multiple: 8,
  alt_mixer_layers: [1],
  mixer: { _target_: "BaseConv", expand_proj: 4, use_bias: true, kernel_size: 3 },
  alt_mixer: {
    _target_: "LinearAttention",
    feature_dim: 4,
    num_heads: 2,
    parallel_implementation: view,
  },
});

type Params = Map<string, F64>;

/** Columns [from, from + n) of a row-major [T, W] array. */
function cols(x: F64, W: number, from: number, n: number): F64 {
  const T = x.length / W, out = new Float64Array(T * n);
  for (let t = 0; t < T; t++) out.set(x.subarray(t * W + from, t * W + from + n), t * n);
  return out;
}

/** The model's loss in float64, composed from the kernels' references. */
function lossF64(c: BasedConfig, p: Params, ids: Int32Array, labels: Int32Array): number {
  const T = ids.length, D = c.nEmbd;
  const w = (n: string) => p.get(n)!;
  let h = embedding(w(EMBEDDING), D, ids);
  let residual: F64 | null = null;
  for (let i = 0; i < c.nLayer; i++) {
    const pre = `transformer.layers.${i}`;
    const m = c.layers[i];
    const { s: r, y: x } = addRmsNorm(h, residual, w(`${pre}.norm1.weight`), c.normEps);
    let a: F64;
    if (m.kind === "conv") {
      const inner = (m.expandProj * D) / 2;
      const z = linear(
        x,
        w(`${pre}.mixer.in_proj.weight`),
        w(`${pre}.mixer.in_proj.bias`),
        T,
        D,
        2 * inner,
      );
      const u1 = cols(z, 2 * inner, 0, inner), u2 = cols(z, 2 * inner, inner, inner);
      const conv = causalConv1d(u1, w(`${pre}.mixer.conv.conv.weight`), null, {
        B,
        L,
        C: inner,
        K: m.kernelSize,
      });
      const g = swiglu(u2, conv);
      a = linear(
        g,
        w(`${pre}.mixer.out_proj.weight`),
        w(`${pre}.mixer.out_proj.bias`),
        T,
        inner,
        D,
      );
    } else {
      const H = m.numHeads, F = m.featureDim, Dh = m.headDim;
      const q = linear(x, w(`${pre}.mixer.proj_q.weight`), null, T, D, H * F);
      const k = linear(x, w(`${pre}.mixer.proj_k.weight`), null, T, D, H * F);
      const v = linear(x, w(`${pre}.mixer.proj_v.weight`), null, T, D, H * Dh);
      const { y } = linearAttentionRef(q, k, v, { B, L, H, F, D: Dh }, m.eps);
      a = linear(y, w(`${pre}.mixer.out_proj.weight`), null, T, H * Dh, D);
    }
    const { s: r2, y: x2 } = addRmsNorm(a, r, w(`${pre}.norm2.weight`), c.normEps);
    const hid = linear(x2, w(`${pre}.mlp.fc1.weight`), null, T, D, 2 * c.mlpHidden);
    const act = swiglu(
      cols(hid, 2 * c.mlpHidden, 0, c.mlpHidden),
      cols(hid, 2 * c.mlpHidden, c.mlpHidden, c.mlpHidden),
    );
    h = linear(act, w(`${pre}.mlp.fc2.weight`), null, T, c.mlpHidden, D);
    residual = r2;
  }
  const { y } = addRmsNorm(h, residual, w("transformer.ln_f.weight"), c.normEps);
  const logits = linear(y, w(EMBEDDING), null, T, D, c.vocabPadded);
  return crossEntropy(logits, labels, c.vocabPadded).loss;
}

/**
 * A model with O(1) activations: random weights of std 1/√fan_in (the
 * initialisation's 0.02 would leave the deeper gradients near zero), norm
 * weights around 1. Values are f32, so the float64 composition sees exactly
 * the GPU's parameters.
 */
function randomModel(e: Engine, c: BasedConfig): { model: BasedLM; params: Params } {
  const model = BasedLM.create(e, c, { seed: 5, groupOf: () => "all", groupOrder: ["all"] });
  const rng = new Rng(11);
  const values = new Map<string, Float32Array>();
  for (const d of declareParams(c)) {
    const n = d.shape.reduce((a, b) => a * b, 1);
    const fanIn = d.shape.length > 1 ? d.shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    const v = /norm|ln_f/.test(d.name)
      ? rng.randn(n, 0.1).map((x) => 1 + x)
      : rng.randn(n, d.name === EMBEDDING ? 1 : 1 / Math.sqrt(fanIn));
    values.set(d.name, Float32Array.from(v));
  }
  model.store.load(values);
  const params: Params = new Map([...values].map(([k, v]) => [k, Float64Array.from(v)]));
  return { model, params };
}

function batchOf(e: Engine, c: BasedConfig): { batch: Batch; ids: Int32Array; labels: Int32Array } {
  const rng = new Rng(7);
  const ids = Int32Array.from({ length: B * L }, () => rng.int(c.vocabSize));
  const labels = Int32Array.from({ length: B * L }, () => rng.int(c.vocabSize));
  return {
    batch: {
      ids: e.tensor(ids, [B, L], "i32"),
      hostIds: ids,
      labels: e.tensor(labels, [B, L], "i32"),
      B,
      L,
    },
    ids,
    labels,
  };
}

gpuTest("model: shapes of hidden states, logits, loss and every gradient", async (e) => {
  const c = modelConfigFromCfg(cfgFor("chunked"), L);
  eq(c.layers.map((m) => m.kind), ["conv", "linear"]);
  eq(c.vocabPadded, 64);
  const { model } = randomModel(e, c);
  const { batch } = batchOf(e, c);
  const [hidden, logits] = noGrad(() => tidy(() => [model.hidden(batch), model.logits(batch)]));
  eq(hidden.shape, [B * L, c.nEmbd]);
  eq(logits.shape, [B, L, c.vocabPadded]);
  const loss = tidy(() => model.loss(batch, { gradScale: 1 / (B * L) }));
  eq(loss.size, 1);
  backward(loss);
  const grads = await model.store.read("grads");
  for (const d of declareParams(c)) {
    const g = grads.get(d.name);
    ok(g, `no gradient for ${d.name}`);
    eq(g.length, d.shape.reduce((a, b) => a * b, 1), d.name);
    ok(g.every(Number.isFinite), `${d.name}: non-finite gradient`);
    ok(g.some((x) => x !== 0), `${d.name}: gradient is all zeros`);
  }
  for (const t of [hidden, logits, loss, batch.ids, batch.labels!]) t.dispose();
  model.store.destroy();
});

/**
 * Tolerances (f32 on the GPU against float64 of the same f32 parameters):
 * u = 2^-24 = 6e-8 per rounding. The longest sums are the 256-wide MLP
 * products and the 64-term softmax; through 2 blocks whose normalised layers
 * have O(1) gains the loss is expected within a few hundred u: 2e-5 relative
 * (about 340 u). Gradients take as many roundings again on the way back and
 * are judged against the largest entry of their tensor (small entries carry
 * the absolute error of the large ones): 5e-5 of max |g| (about 800 u).
 * Measured on lavapipe: loss 8e-8, gradients 1.5e-7. Finite differences:
 * central, h = 1e-4 in float64 (truncation ~h^2 |f'''| = 1e-8 of the gradient
 * scale, roundoff ~1e-16/h), negligible against both.
 */
const LOSS_RTOL = 2e-5;
const GRAD_TOL = 5e-5;
const FD_H = 1e-4;

for (const view of ["quadratic", "chunked", "cumsum"]) {
  gpuTest(`model: 2 layers [${view}], loss and gradients vs the float64 composition`, async (e) => {
    const c = modelConfigFromCfg(cfgFor(view), L);
    const { model, params } = randomModel(e, c);
    const { batch, ids, labels } = batchOf(e, c);
    const loss = tidy(() => model.loss(batch, { gradScale: 1 / (B * L) }));
    backward(loss);
    const got = (await e.readF32(loss))[0];
    const want = lossF64(c, params, ids, labels);
    ok(
      Math.abs(got - want) <= LOSS_RTOL * Math.abs(want),
      `loss ${got}, float64 ${want} (rel ${(Math.abs(got - want) / want).toExponential(2)})`,
    );
    const grads = await model.store.read("grads");
    const rng = new Rng(3);
    const check = [
      EMBEDDING,
      "transformer.layers.0.mixer.in_proj.weight",
      "transformer.layers.0.mixer.conv.conv.weight",
      "transformer.layers.0.mlp.fc1.weight",
      "transformer.layers.1.norm1.weight",
      "transformer.layers.1.mixer.proj_q.weight",
      "transformer.layers.1.mixer.proj_k.weight",
      "transformer.layers.1.mixer.proj_v.weight",
      "transformer.ln_f.weight",
    ];
    for (const name of check) {
      const x = params.get(name)!, g = grads.get(name)!;
      const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      ok(scale > 0, `${name}: zero gradient`);
      for (let s = 0; s < 4; s++) {
        const i = rng.int(x.length);
        const x0 = x[i];
        x[i] = x0 + FD_H;
        const fp = lossF64(c, params, ids, labels);
        x[i] = x0 - FD_H;
        const fm = lossF64(c, params, ids, labels);
        x[i] = x0;
        const fd = (fp - fm) / (2 * FD_H);
        ok(
          Math.abs(g[i] - fd) <= GRAD_TOL * scale,
          `${name}[${i}]: gradient ${g[i]}, finite difference ${fd} (max |g| ${scale})`,
        );
      }
    }
    for (const t of [loss, batch.ids, batch.labels!]) t.dispose();
    model.store.destroy();
  });
}
