/**
 * model/config.ts: the model config resolved once, typed: the layer-to-mixer
 * map, the view names resolved (aliases from the reference's
 * `parallel_implementation`), a misspelt view refused with the valid names.
 */
import { deepStrictEqual as eq, ok, throws } from "node:assert/strict";
import { modelConfigFromCfg, usedSections, withView } from "../../model/config.ts";
import { checkSequenceLength } from "../../train/preflight.ts";
import { BasedError } from "../../errors.ts";

const MODEL = {
  n_embd: 32,
  n_layer: 4,
  alt_mixer_layers: [1, 3],
  alt_mixer_2_layers: [3],
  mixer: { _target_: "BaseConv", l_max: 64 },
  alt_mixer: { _target_: "LinearAttention", feature_dim: 8, num_heads: 2 },
  alt_mixer_2: { _target_: "SlidingAttention", num_heads: 2 },
};
const withImpl = (impl: string) => ({
  ...MODEL,
  alt_mixer: { ...MODEL.alt_mixer, parallel_implementation: impl },
});

Deno.test("model config: layer map (alt_mixer_2 over alt_mixer over mixer), sections used", () => {
  const c = modelConfigFromCfg(MODEL, 64);
  eq(c.layers.map((l) => l.kind), ["conv", "linear", "conv", "slide"]);
  eq(c.layers.map((l) => l.section), ["mixer", "alt_mixer", "mixer", "alt_mixer_2"]);
  eq(usedSections(c), ["mixer", "alt_mixer", "alt_mixer_2"]);
  eq(c.layers[0].lMax, 64);
  eq(c.layers[1].lMax, undefined);
});

Deno.test("model config: view names resolved once, eps default by name", () => {
  for (
    const [impl, view, eps] of [
      ["quadratic", "quadratic", 1e-12],
      ["chunked", "chunked", 1e-12],
      ["cumsum", "cumsum", 1e-12],
      ["fla_parallel", "chunked", 1e-6],
      ["fla_chunk", "chunked", 1e-6],
      ["linear", "cumsum", 1e-12],
    ] as const
  ) {
    const l = modelConfigFromCfg(withImpl(impl), 64).layers[1];
    eq([l.view, l.eps], [view, eps], impl);
  }
  eq(modelConfigFromCfg(MODEL, 64).layers[1].view, "quadratic");
  const c = withView(modelConfigFromCfg(withImpl("fla_parallel"), 64), "cumsum", 1e-12);
  eq([c.layers[1].view, c.layers[1].eps, c.layers[0].view], ["cumsum", 1e-12, "quadratic"]);
});

Deno.test("model config: a misspelt view is refused with the valid names", () => {
  throws(() => modelConfigFromCfg(withImpl("fla_paralel"), 64), (e: unknown) => {
    ok(e instanceof BasedError);
    eq(
      e.message,
      "model.config.alt_mixer.parallel_implementation: unknown linear-attention view " +
        "'fla_paralel' (valid: quadratic, chunked, cumsum, fla_parallel, fla_chunk, linear)",
    );
    return true;
  });
  // a view name on a mixer that is not linear attention is not read
  modelConfigFromCfg({ ...MODEL, mixer: { ...MODEL.mixer, parallel_implementation: "x" } }, 64);
});

Deno.test("preflight: the sequence length against the used mixers' l_max", () => {
  const c = modelConfigFromCfg(MODEL, 64);
  checkSequenceLength(c, 64);
  throws(() => checkSequenceLength(c, 65), /model\.config\.mixer\.l_max is 64/);
  // a section no layer uses does not bound it
  const unused = modelConfigFromCfg({ ...MODEL, alt_mixer_2_layers: [], n_layer: 3 }, 64);
  checkSequenceLength(
    modelConfigFromCfg({
      ...MODEL,
      alt_mixer_layers: [],
      alt_mixer: { ...MODEL.alt_mixer, l_max: 8 },
    }, 64),
    64,
  );
  eq(usedSections(unused), ["mixer", "alt_mixer"]);
  throws(
    () => checkSequenceLength(modelConfigFromCfg({ ...MODEL, max_position_embeddings: 32 }), 64),
    /model\.config\.max_position_embeddings is 32/,
  );
});
