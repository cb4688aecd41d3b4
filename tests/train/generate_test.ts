/**
 * generate: greedy continuation from a checkpoint (recurrent decode after a
 * prefill) equals the argmax of the full forward's last-position logits at
 * every step (the padding rows of the vocabulary are never sampled); it stops
 * at end-of-text unless told not to. Sampling (train/sample.ts): top-k = 1 is
 * greedy, top-p keeps exactly the smallest most-likely set with mass >= p, and
 * the empirical frequencies of seeded draws match softmax(logits / T) after
 * the filters within a binomial bound — a greedy-only sampler fails these.
 */
import { deepStrictEqual as eq } from "node:assert/strict";
import { gpuTest } from "../helpers.ts";
import { BasedLM, EMBEDDING } from "../../model/based.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { generate } from "../../train/generate.ts";
import { argmax, sample, samplingDistribution } from "../../train/sample.ts";
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
        log: () => {},
      });
      eq(out.ids.length, 4);
      eq(out.stats.promptTokens, encode(prompt).length);
      eq(out.stats.newTokens, 3);
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

gpuTest("generate: stops at end-of-text unless stopAtEos is false", async (e) => {
  const config = modelConfigFromCfg(MODEL, 64);
  const model = BasedLM.create(e, config, { seed: 5, groupOf: () => "all", groupOrder: ["all"] });
  const prompt = "And God said";
  // make end-of-text the greedy choice after the prompt: E[EOS] = 100·y/|y|,
  // y the final hidden state of the prompt's last position (EOS is not in the prompt)
  const ids = encode(prompt);
  const host = Int32Array.from(ids);
  const idsT = e.tensor(host, [1, ids.length], "i32");
  const yT = noGrad(() =>
    tidy(() => model.hidden({ ids: idsT, hostIds: host, B: 1, L: ids.length }))
  );
  const y = (await e.readF32(yT)).subarray((ids.length - 1) * config.nEmbd);
  yT.dispose();
  idsT.dispose();
  const E = model.p(EMBEDDING);
  const w = await e.readF32(E);
  const norm = Math.hypot(...y);
  for (let d = 0; d < config.nEmbd; d++) w[50256 * config.nEmbd + d] = (100 * y[d]) / norm;
  e.upload(E, w);
  const opts = { prompt, maxNewTokens: 3, temperature: 0, topK: 0, seed: 0, log: () => {} };
  const stopped = await generate(e, model, opts);
  eq(stopped.ids, []);
  const went = await generate(e, model, { ...opts, stopAtEos: false });
  eq(went.ids.length, 3);
  eq(went.ids[0], 50256);
  model.store.destroy();
});

const LOGITS = Float32Array.from([1.5, -0.5, 2.25, 0.0, 2.25, -3.0, 1.0, 0.5, -1.0, 1.75]);
const softmax = (xs: number[], T: number) => {
  const m = Math.max(...xs);
  const w = xs.map((x) => Math.exp((x - m) / T));
  const s = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / s);
};

/** n seeded draws; every frequency within 5 binomial standard deviations of `want`. */
function checkFrequencies(o: { temperature: number; topK: number; topP?: number }, want: number[]) {
  const n = 40000;
  const rng = new Random(1234);
  const count = new Array(LOGITS.length).fill(0);
  for (let i = 0; i < n; i++) count[sample(LOGITS, LOGITS.length, o, rng)]++;
  for (let t = 0; t < LOGITS.length; t++) {
    const p = want[t];
    const bound = 5 * Math.sqrt((p * (1 - p)) / n) + 1e-12;
    if (Math.abs(count[t] / n - p) > bound) {
      throw new Error(`token ${t}: frequency ${count[t] / n}, expected ${p} ± ${bound}`);
    }
  }
}

Deno.test("sample: temperature 0 and top-k 1 are greedy (lowest id on ties)", () => {
  const rng = new Random(3);
  eq(argmax(LOGITS, LOGITS.length), 2);
  for (let i = 0; i < 20; i++) {
    eq(sample(LOGITS, LOGITS.length, { temperature: 0, topK: 0 }, rng), 2);
    eq(sample(LOGITS, LOGITS.length, { temperature: 1.5, topK: 1 }, rng), 2);
  }
  // only the first `vocab` entries are candidates (padding rows never sampled)
  eq(argmax(LOGITS, 2), 0);
});

Deno.test("sample: frequencies match softmax(logits / T) at T = 1 and T = 0.5", () => {
  const xs = [...LOGITS];
  checkFrequencies({ temperature: 1, topK: 0 }, softmax(xs, 1));
  checkFrequencies({ temperature: 0.5, topK: 0 }, softmax(xs, 0.5));
});

Deno.test("sample: top-k renormalises over the k most likely", () => {
  // top 3: ids 2, 4 (2.25, tie) and 9 (1.75)
  const keep = [2, 4, 9];
  const p = softmax(keep.map((i) => LOGITS[i]), 1);
  const want = new Array(LOGITS.length).fill(0);
  keep.forEach((id, j) => (want[id] = p[j]));
  eq(samplingDistribution(LOGITS, LOGITS.length, { temperature: 1, topK: 3 }).ids, keep);
  checkFrequencies({ temperature: 1, topK: 3 }, want);
});

Deno.test("sample: top-p keeps exactly the smallest most-likely set with mass >= p", () => {
  const probs = softmax([...LOGITS], 1);
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b);
  for (const p of [0.05, 0.3, 0.5, 0.8, 0.95, 0.999]) {
    const got = samplingDistribution(LOGITS, LOGITS.length, { temperature: 1, topK: 0, topP: p });
    // smallest n with cumulative mass >= p
    let n = 0, mass = 0;
    while (mass < p) mass += probs[order[n++]];
    eq(got.ids, order.slice(0, n), `p=${p}`);
    const prev = order.slice(0, n - 1).reduce((s, i) => s + probs[i], 0);
    if (!(prev < p && mass >= p)) throw new Error(`p=${p}: set is not minimal`);
  }
  // the exact boundary: p equal to the mass of the top two keeps two tokens
  const two = probs[order[0]] + probs[order[1]];
  eq(
    samplingDistribution(LOGITS, LOGITS.length, { temperature: 1, topK: 0, topP: two - 1e-12 }).ids
      .length,
    2,
  );
  const p = 0.8;
  const got = samplingDistribution(LOGITS, LOGITS.length, { temperature: 1, topK: 0, topP: p });
  const s = got.ids.reduce((a, i) => a + probs[i], 0);
  const want = new Array(LOGITS.length).fill(0);
  for (const i of got.ids) want[i] = probs[i] / s;
  checkFrequencies({ temperature: 1, topK: 0, topP: p }, want);
});

Deno.test("sample: seeded draws are reproducible", () => {
  const draw = (seed: number) => {
    const r = new Random(seed);
    return Array.from({ length: 50 }, () => sample(LOGITS, 10, { temperature: 1, topK: 0 }, r));
  };
  eq(draw(5), draw(5));
});

Deno.test("sample: the one-pass top-k equals a full sort (ties to the lower id), small and large k", () => {
  const rng = new Random(8);
  const V = 1000;
  const logits = Float32Array.from({ length: V }, () => Math.round(rng.next() * 200) / 10); // ties
  const sorted = [...Array(V).keys()].sort((a, b) => logits[b] - logits[a] || a - b);
  for (const k of [2, 17, 256, 300]) {
    eq(
      samplingDistribution(logits, V, { temperature: 1, topK: k }).ids,
      sorted.slice(0, k),
      `k=${k}`,
    );
  }
  // unfiltered: every token, in id order, probabilities softmax(logits / T)
  const all = samplingDistribution(LOGITS, LOGITS.length, { temperature: 2, topK: 0 });
  eq(all.ids, [...LOGITS.keys()]);
  const want = softmax([...LOGITS], 2);
  all.probs.forEach((p, i) => {
    if (Math.abs(p - want[i]) > 1e-12) throw new Error(`p[${i}] ${p} vs ${want[i]}`);
  });
});
