/**
 * `based generate`: continues a prompt with a trained checkpoint. Each new
 * token runs the parallel forward over the (left-truncated) context and
 * samples from the last position's logits (greedy at temperature 0).
 */
import type { Engine } from "../tensor/engine.ts";
import { noGrad } from "../tensor/tape.ts";
import { tidy } from "../tensor/tensor.ts";
import { narrow } from "../kernels/layout.ts";
import { type BasedLM, EMBEDDING } from "../model/based.ts";
import { lmHeadLogits } from "../model/lm_head.ts";
import { Random } from "../tensor/random.ts";
import { decode, encode, EOS, TokenStreamDecoder } from "../data/tokenize/mod.ts";

export interface GenerateOptions {
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  /** nucleus sampling: the smallest set of most likely tokens of mass ≥ topP (1 = all) */
  topP?: number;
  seed: number;
  /** context window (tokens kept from the end) */
  context: number;
  stopAtEos: boolean;
  onToken?: (text: string) => void;
}

/** Index of the sampled token from logits (host). */
export function sample(
  logits: Float32Array,
  vocab: number,
  o: { temperature: number; topK: number },
  rng: Random,
): number {
  if (o.temperature <= 0) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = [...Array(vocab).keys()];
  if (o.topK > 0 && o.topK < vocab) {
    idx = idx.sort((a, b) => logits[b] - logits[a]).slice(0, o.topK);
  }
  let mx = -Infinity;
  for (const i of idx) mx = Math.max(mx, logits[i]);
  const w = idx.map((i) => Math.exp((logits[i] - mx) / o.temperature));
  const sum = w.reduce((a, b) => a + b, 0);
  let u = rng.next() * sum;
  for (let j = 0; j < idx.length; j++) {
    u -= w[j];
    if (u <= 0) return idx[j];
  }
  return idx[idx.length - 1];
}

export async function generate(
  e: Engine,
  model: BasedLM,
  o: GenerateOptions,
): Promise<{ ids: number[]; text: string }> {
  const ids = encode(o.prompt);
  if (ids.length === 0) ids.push(EOS);
  const out: number[] = [];
  const rng = new Random(o.seed);
  const vocab = model.config.vocabSize; // never sample the padding rows
  const stream = new TokenStreamDecoder(); // a character may span tokens
  for (let n = 0; n < o.maxNewTokens; n++) {
    const ctx = ids.slice(-o.context);
    const L = ctx.length;
    const host = Int32Array.from(ctx);
    const idsT = e.tensor(host, [1, L], "i32");
    const logits = noGrad(() =>
      tidy(() => {
        const y = model.hidden({ ids: idsT, hostIds: host, B: 1, L });
        return lmHeadLogits(narrow(y, 0, L - 1, 1), model.p(EMBEDDING));
      })
    );
    const row = await e.readF32(logits);
    logits.dispose();
    idsT.dispose();
    const next = sample(row, vocab, o, rng);
    if (o.stopAtEos && next === EOS) break;
    ids.push(next);
    out.push(next);
    o.onToken?.(stream.push(next));
  }
  o.onToken?.(stream.flush());
  return { ids: out, text: decode(out) };
}
