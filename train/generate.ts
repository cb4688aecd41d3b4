/**
 * `based generate`: continues a prompt with a trained model. The prompt runs
 * once through the parallel forward (prefill), which also fills each layer's
 * recurrent state; every new token is then one recurrent step (model/decode.ts).
 * Sampling: greedy at temperature 0, else temperature, top-k and top-p
 * (train/sample.ts). Stops at the end-of-text token unless stopAtEos is false.
 */
import type { Engine } from "../tensor/engine.ts";
import type { BasedLM } from "../model/based.ts";
import { Decoder } from "../model/decode.ts";
import { Random } from "../tensor/random.ts";
import { decode, encode, EOS, TokenStreamDecoder } from "../data/tokenize/mod.ts";
import { sample } from "./sample.ts";

export { sample } from "./sample.ts";

export interface GenerateOptions {
  prompt: string;
  maxNewTokens: number;
  /** 0 = greedy */
  temperature: number;
  /** 0 = all tokens */
  topK: number;
  /** nucleus sampling mass; 1 (default) = all tokens */
  topP?: number;
  seed: number;
  /** prompt tokens kept from the end (default: all) */
  context?: number;
  /** stop at the end-of-text token (default true) */
  stopAtEos?: boolean;
  onToken?: (text: string) => void;
  /** receives the throughput line; default: printed to stderr */
  log?: (line: string) => void;
}

export interface GenerateStats {
  promptTokens: number;
  prefillMs: number;
  newTokens: number;
  decodeMs: number;
}

export function formatStats(s: GenerateStats): string {
  const rate = (n: number, ms: number) => (ms > 0 ? (n / ms) * 1000 : 0).toFixed(1);
  return `prefill ${s.promptTokens} tokens in ${s.prefillMs.toFixed(0)} ms ` +
    `(${rate(s.promptTokens, s.prefillMs)} tok/s) | decode ${s.newTokens} tokens in ` +
    `${s.decodeMs.toFixed(0)} ms (${rate(s.newTokens, s.decodeMs)} tok/s)`;
}

export async function generate(
  e: Engine,
  model: BasedLM,
  o: GenerateOptions,
): Promise<{ ids: number[]; text: string; stats: GenerateStats }> {
  let ids = encode(o.prompt);
  if (ids.length === 0) ids.push(EOS);
  if (o.context && ids.length > o.context) ids = ids.slice(-o.context);
  const out: number[] = [];
  const rng = new Random(o.seed);
  const vocab = model.config.vocabSize; // never sample the padding rows
  const stream = new TokenStreamDecoder(); // a character may span tokens
  const stopAtEos = o.stopAtEos ?? true;
  const dec = new Decoder(model, 1, ids.length + Math.max(0, o.maxNewTokens));
  const stats: GenerateStats = {
    promptTokens: ids.length,
    prefillMs: 0,
    newTokens: 0,
    decodeMs: 0,
  };
  try {
    let t0 = performance.now();
    if (o.maxNewTokens > 0) {
      let logits = dec.prefill(Int32Array.from(ids), ids.length);
      for (let n = 0; n < o.maxNewTokens; n++) {
        const row = await e.readF32(logits);
        logits.dispose();
        const t1 = performance.now();
        if (n === 0) stats.prefillMs = t1 - t0;
        else {
          stats.decodeMs += t1 - t0;
          stats.newTokens++;
        }
        const next = sample(row, vocab, o, rng);
        if (stopAtEos && next === EOS) break;
        out.push(next);
        o.onToken?.(stream.push(next));
        if (n + 1 === o.maxNewTokens) break;
        t0 = performance.now();
        logits = dec.step(Int32Array.of(next));
      }
    }
  } finally {
    dec.dispose();
  }
  o.onToken?.(stream.flush());
  // default: stderr, on its own line after streamed text
  (o.log ?? ((s: string) => console.error(o.onToken ? `\n${s}` : s)))(formatStats(stats));
  return { ids: out, text: decode(out), stats };
}
