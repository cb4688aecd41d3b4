/**
 * The recurrent view (model/decode.ts): after a parallel prefill of P tokens,
 * each recurrent step's logits equal the parallel forward's logits at that
 * position, for small random models with every mixer kind (BaseConv, linear
 * attention in each training view, sliding window whose ring cache wraps,
 * full MHA, the fixed decay with and without row normalisation and with
 * decay_proj), batch 2 with
 * different sequences.
 *
 * Tolerance: both paths compute the same f32 quantities with different
 * summation orders (prefix states vs. per-token recurrences, online vs.
 * tiled softmax). With u = 2^-24, one reduction of n terms differs by at most
 * ~n·u relative to the sum of |terms|; the longest here is the linear
 * attention's state contraction (n = 1+F+F² = 73 features × up to 20 tokens
 * ≈ 1.5e3 terms → 9e-5), passed through 6 normalised layers. We allow
 * 2e-4 × max(1, max|logit|) — far below the logits' spread (~0.5) so a wrong
 * position, tap, decay or state would fail.
 */
import { deepStrictEqual as eq, throws } from "node:assert/strict";
import { gpuTest } from "../helpers.ts";
import { BasedError } from "../../errors.ts";
import { BasedLM } from "../../model/based.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { Decoder } from "../../model/decode.ts";
import { noGrad } from "../../tensor/tape.ts";
import { tidy } from "../../tensor/tensor.ts";
import { Random } from "../../tensor/random.ts";

const V = 96;

function modelCfg(
  base: "BaseConv" | "MHA",
  view: string,
  decay?: Record<string, unknown>,
): Record<string, unknown> {
  return {
    ...decay,
    n_embd: 32,
    n_head: 2,
    n_layer: 6,
    n_inner: 64,
    vocab_size: V,
    pad_vocab_size_multiple: 8,
    initializer_range: 0.15,
    alt_mixer_layers: [1, 4],
    alt_mixer_2_layers: [2],
    mixer: base === "BaseConv"
      ? { _target_: "BaseConv", expand_proj: 4, use_bias: true }
      : { _target_: "MHA", num_heads: 2 },
    alt_mixer: {
      _target_: "LinearAttention",
      feature_dim: 8,
      num_heads: 2,
      parallel_implementation: view,
    },
    alt_mixer_2: { _target_: "SlidingAttention", window_size: 8, num_heads: 2 },
  };
}

const N = 20;
const B = 2;

const DECAY = { fixed_decay: true, decay_const: -2, decay_denom: true };

for (
  const [base, view, decay] of [
    ["BaseConv", "quadratic", undefined],
    ["BaseConv", "chunked", undefined],
    ["MHA", "cumsum", undefined],
    ["BaseConv", "chunked", DECAY],
    ["MHA", "quadratic", { ...DECAY, decay_denom: false }],
    ["BaseConv", "quadratic", { ...DECAY, decay_proj: true }],
  ] as const
) {
  const what = `${base}, ${view}${decay ? `, ${JSON.stringify(decay)}` : ""}`;
  gpuTest(
    `decode: recurrent logits = parallel logits at every position (${what})`,
    async (e) => {
      const config = modelConfigFromCfg(modelCfg(base, view, decay), 64);
      const model = BasedLM.create(e, config, {
        seed: 7,
        groupOf: () => "all",
        groupOrder: ["all"],
      });
      const rng = new Random(11);
      const ids = Int32Array.from({ length: B * N }, () => rng.int(V));
      const idsT = e.tensor(ids, [B, N], "i32");
      const full = noGrad(() => tidy(() => model.logits({ ids: idsT, hostIds: ids, B, L: N })));
      const ref = await e.readF32(full); // [B, N, Vp]
      full.dispose();
      idsT.dispose();
      const Vp = config.vocabPadded;
      let scale = 1;
      for (const x of ref) scale = Math.max(scale, Math.abs(x));
      const tol = 2e-4 * scale;
      for (const P of [1, 7]) {
        const dec = new Decoder(model, B, N);
        const check = async (logits: ReturnType<Decoder["step"]>, pos: number) => {
          const got = await e.readF32(logits);
          logits.dispose();
          for (let b = 0; b < B; b++) {
            for (let v = 0; v < V; v++) {
              const want = ref[(b * N + pos) * Vp + v];
              const err = Math.abs(got[b * Vp + v] - want);
              if (!(err <= tol)) {
                throw new Error(
                  `P=${P} b=${b} position ${pos} token ${v}: ${
                    got[b * Vp + v]
                  } vs ${want} (tol ${tol})`,
                );
              }
            }
          }
        };
        const prompt = new Int32Array(B * P);
        for (let b = 0; b < B; b++) prompt.set(ids.subarray(b * N, b * N + P), b * P);
        await check(dec.prefill(prompt, P), P - 1);
        for (let t = P; t < N; t++) {
          await check(dec.step(Int32Array.from({ length: B }, (_, b) => ids[b * N + t])), t);
        }
        dec.dispose();
      }
      model.store.destroy();
    },
  );
}

Deno.test("config: the decay keys (fixed_decay, decay_const, decay_denom, decay_proj)", () => {
  const at = (extra: Record<string, unknown>, view = "quadratic") =>
    modelConfigFromCfg(modelCfg("BaseConv", view, extra), 64).layers.map((l) => l.decay);
  eq(at({}), [null, null, null, null, null, null]); // off by default
  const d = at({ fixed_decay: true });
  eq(d[1], { c0: -5, denom: true, proj: false }); // the reference class defaults
  eq(d[0], null); // BaseConv and sliding-window layers take no decay
  eq(at({ fixed_decay: true, decay_const: -3, decay_denom: false })[4], {
    c0: -3,
    denom: false,
    proj: false,
  });
  eq(at({ fixed_decay: true, decay_proj: true })[1]?.proj, true);
  const refuses = (extra: Record<string, unknown>, re: RegExp, view = "quadratic") =>
    throws(() => at(extra, view), (e: Error) => e instanceof BasedError && re.test(e.message));
  refuses({ decay_proj: true }, /decay_proj .* needs model.config.fixed_decay=true/);
  refuses({ fixed_decay: true, decay_const: 0 }, /decay_const must be negative/);
  refuses({ fixed_decay: true }, /view 'cumsum' does not implement the decay/, "cumsum");
});

gpuTest("decode: fixed_decay changes the model's logits (the key is not ignored)", async (e) => {
  const read = async (decay?: Record<string, unknown>) => {
    const config = modelConfigFromCfg(modelCfg("BaseConv", "quadratic", decay), 64);
    const model = BasedLM.create(e, config, { seed: 7, groupOf: () => "all", groupOrder: ["all"] });
    const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % V);
    const idsT = e.tensor(ids, [1, 12], "i32");
    const t = noGrad(() => tidy(() => model.logits({ ids: idsT, hostIds: ids, B: 1, L: 12 })));
    const out = await e.readF32(t);
    t.dispose();
    idsT.dispose();
    model.store.destroy();
    return out;
  };
  const a = await read(), b = await read(DECAY);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
  if (!(diff > 1e-2)) throw new Error(`decay changed the logits by only ${diff}`);
});
