/**
 * The parameters of a Based LM: names (the reference's state_dict keys),
 * shapes, module kinds (for optimizer grouping) and the initialisation of
 * the reference's `based/models/gpt.py::_init_weights` (docs/reference.md, Model).
 */
import type { BasedConfig } from "./config.ts";
import { deriveSeed, Random } from "../tensor/random.ts";

export type ModuleKind = "embedding" | "linear" | "bias" | "norm" | "conv";

export interface ParamDecl {
  name: string;
  shape: number[];
  kind: ModuleKind;
  init:
    | { type: "normal"; std: number }
    | { type: "zeros" }
    | { type: "ones" }
    | { type: "uniform"; bound: number };
}

/** Every parameter of the model, in the reference's module order. */
export function declareParams(c: BasedConfig): ParamDecl[] {
  const d = c.nEmbd;
  const std = c.initializerRange;
  const outStd = std / Math.sqrt(2 * c.nLayer);
  const out: ParamDecl[] = [];
  const lin = (name: string, o: number, i: number, s = std) =>
    out.push({ name, shape: [o, i], kind: "linear", init: { type: "normal", std: s } });
  const bias = (name: string, n: number) =>
    out.push({ name, shape: [n], kind: "bias", init: { type: "zeros" } });
  const norm = (name: string) =>
    out.push({ name, shape: [d], kind: "norm", init: { type: "ones" } });
  out.push({
    name: "transformer.embeddings.word_embeddings.weight",
    shape: [c.vocabPadded, d],
    kind: "embedding",
    init: { type: "normal", std },
  });
  c.layers.forEach((m, i) => {
    const p = `transformer.layers.${i}`;
    if (m.kind === "conv") {
      const inner = (m.expandProj * d) / 2;
      lin(`${p}.mixer.in_proj.weight`, 2 * inner, d);
      if (m.useBias) bias(`${p}.mixer.in_proj.bias`, 2 * inner);
      lin(`${p}.mixer.out_proj.weight`, d, inner, outStd);
      if (m.useBias) bias(`${p}.mixer.out_proj.bias`, d);
      // PyTorch Conv1d default: kaiming_uniform(a=sqrt(5)) -> U(-1/sqrt(fan_in), +), fan_in = 1 * K
      out.push({
        name: `${p}.mixer.conv.conv.weight`,
        shape: [inner, 1, m.kernelSize],
        kind: "conv",
        init: { type: "uniform", bound: 1 / Math.sqrt(m.kernelSize) },
      });
    } else if (m.kind === "linear") {
      lin(`${p}.mixer.proj_q.weight`, m.featureDim * m.numHeads, d);
      lin(`${p}.mixer.proj_k.weight`, m.featureDim * m.numHeads, d);
      lin(`${p}.mixer.proj_v.weight`, m.headDim * m.numHeads, d);
      lin(`${p}.mixer.out_proj.weight`, d, m.headDim * m.numHeads, outStd);
    } else {
      lin(`${p}.mixer.Wqkv.weight`, 3 * d, d);
      lin(`${p}.mixer.out_proj.weight`, d, d, outStd);
    }
    norm(`${p}.norm1.weight`);
    lin(`${p}.mlp.fc1.weight`, 2 * c.mlpHidden, d);
    lin(`${p}.mlp.fc2.weight`, d, c.mlpHidden, outStd);
    norm(`${p}.norm2.weight`);
  });
  norm("transformer.ln_f.weight");
  return out;
}

/** Initial values of one parameter (seeded per name: independent of declaration order). */
export function initValues(p: ParamDecl, seed: number): Float32Array {
  let n = 1;
  for (const s of p.shape) n *= s;
  const a = new Float32Array(n);
  const rng = new Random(deriveSeed(seed, p.name));
  switch (p.init.type) {
    case "normal":
      return rng.fillNormal(a, p.init.std);
    case "uniform":
      return rng.fillUniform(a, -p.init.bound, p.init.bound);
    case "ones":
      return a.fill(1);
    case "zeros":
      return a;
  }
}

export function countParams(decls: ParamDecl[]): number {
  return decls.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}
