/**
 * generate: greedy continuation from a checkpoint equals the argmax of the
 * full forward's last-position logits at every step (the padding rows of the
 * vocabulary are never sampled); sampling is seeded and reproducible.
 */
import { deepStrictEqual as eq } from "node:assert/strict";
import { gpuTest } from "../helpers.ts";
import { BasedLM } from "../../model/based.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { generate, sample } from "../../train/generate.ts";
import { findCheckpoint, modelFromCheckpoint } from "../../train/restore.ts";
import { saveCheckpoint } from "../../train/checkpoint.ts";
import { encode } from "../../data/tokenize/mod.ts";
import { noGrad } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import { Random } from "../../tensor/random.ts";

const MODEL = {
  n_embd: 32,
  n_head: 2,
  n_layer: 3,
  n_inner: 64,
  vocab_size: 50257,
  pad_vocab_size_multiple: 8,
  alt_mixer_layers: [1],
  alt_mixer_2_layers: [2],
  mixer: { _target_: "BaseConv", expand_proj: 4, use_bias: true },
  alt_mixer: {
    _target_: "LinearAttention",
    feature_dim: 8,
    num_heads: 2,
    parallel_implementation: "chunked",
  },
  alt_mixer_2: { _target_: "SlidingAttention", window_size: 8, num_heads: 2 },
};

gpuTest(
  "generate: greedy tokens are the full forward's argmax; checkpoint round trip",
  async (e) => {
    const config = modelConfigFromCfg(MODEL, 64);
    const model = BasedLM.create(e, config, { seed: 3, groupOf: () => "all", groupOrder: ["all"] });
    const tmp = await Deno.makeTempDir({ prefix: "based-gen-" });
    try {
      await saveCheckpoint(tmp, {
        weights: await model.store.read("values"),
        optimizer: new Map(),
        state: { step: 1, config: { model: { config: MODEL }, datamodule: { max_length: 64 } } },
      }, { shapes: new Map(model.store.params.map((p) => [p.name, [...p.shape]])) });
      const { model: m2 } = modelFromCheckpoint(e, await findCheckpoint(tmp, () => {}));
      const prompt = "In the beginning";
      const out = await generate(e, m2, {
        prompt,
        maxNewTokens: 4,
        temperature: 0,
        topK: 0,
        seed: 0,
        context: 64,
        stopAtEos: false,
      });
      // reference: argmax over real vocabulary rows of the full logits, token by token
      const ids = encode(prompt);
      for (const want of out.ids) {
        const L = ids.length;
        const host = Int32Array.from(ids);
        const idsT = e.tensor(host, [1, L], "i32");
        const logits = noGrad(() =>
          tidy(() => model.logits({ ids: idsT, hostIds: host, B: 1, L }))
        );
        const all = await e.readF32(logits);
        const row = all.subarray((L - 1) * config.vocabPadded, L * config.vocabPadded);
        let best = 0;
        for (let i = 1; i < config.vocabSize; i++) if (row[i] > row[best]) best = i;
        eq(want, best);
        ids.push(best);
        idsT.dispose();
        logits.dispose();
      }
      model.store.destroy();
      m2.store.destroy();
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test("generate: sampling is seeded and stays inside the top-k", () => {
  const logits = Float32Array.from({ length: 20 }, (_, i) => i % 7);
  const draw = (seed: number) => {
    const r = new Random(seed);
    return Array.from({ length: 50 }, () => sample(logits, 20, { temperature: 1, topK: 3 }, r));
  };
  eq(draw(5), draw(5));
  const top3 = new Set([6, 13, 5]); // values 6, 6, 5
  for (const t of draw(9)) {
    if (!top3.has(t) && logits[t] < 5) throw new Error(`sampled ${t} outside the top 3`);
  }
});
