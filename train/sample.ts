/**
 * Choosing the next token from a row of logits (host side), as the reference's
 * generation utilities and Hugging Face do: temperature 0 (or top-k 1) is
 * greedy; otherwise softmax(logits / T) restricted to the top-k tokens, then to
 * the smallest set of most likely tokens whose mass reaches top-p, renormalised.
 */
import type { Random } from "../tensor/random.ts";

export interface SampleOptions {
  /** 0 = greedy */
  temperature: number;
  /** keep the k most likely tokens (0 = all) */
  topK: number;
  /** keep the smallest most-likely set with mass ≥ p (1 or 0 = all) */
  topP?: number;
}

/** Index of the largest logit among the first `vocab` (lowest index on ties). */
export function argmax(logits: ArrayLike<number>, vocab: number, offset = 0): number {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (logits[offset + i] > logits[offset + best]) best = i;
  return best;
}

/** The k largest of the first `vocab` logits, most likely first (lower id on ties). */
function topKIds(logits: ArrayLike<number>, vocab: number, k: number, offset: number): number[] {
  const before = (a: number, b: number) =>
    logits[offset + a] > logits[offset + b] || (logits[offset + a] === logits[offset + b] && a < b);
  if (k > 256) {
    const ids = Array.from({ length: vocab }, (_, i) => i);
    return ids.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0)).slice(0, k);
  }
  // one pass keeping a sorted list of k (insertion: O(vocab) when most tokens fall below it)
  const top: number[] = [];
  for (let i = 0; i < vocab; i++) {
    if (top.length === k && !before(i, top[k - 1])) continue;
    let j = top.length < k ? top.length : k - 1;
    if (top.length < k) top.push(i);
    while (j > 0 && before(i, top[j - 1])) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top;
}

/**
 * The distribution sampling draws from: token ids and their renormalised
 * probabilities — most likely first (lower id on ties) when top-k or top-p
 * filters, in id order when nothing is filtered.
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  vocab: number,
  o: SampleOptions,
  offset = 0,
): { ids: number[]; probs: number[] } {
  if (o.temperature <= 0 || o.topK === 1) {
    return { ids: [argmax(logits, vocab, offset)], probs: [1] };
  }
  const p = o.topP ?? 1;
  const nucleus = p > 0 && p < 1;
  let ids: number[];
  if (o.topK > 0 && o.topK < vocab) ids = topKIds(logits, vocab, o.topK, offset);
  else if (nucleus) ids = topKIds(logits, vocab, vocab, offset);
  else ids = Array.from({ length: vocab }, (_, i) => i);
  let mx = -Infinity;
  for (const i of ids) mx = Math.max(mx, logits[offset + i]);
  let w = ids.map((i) => Math.exp((logits[offset + i] - mx) / o.temperature));
  let sum = w.reduce((a, b) => a + b, 0);
  if (nucleus) {
    let mass = 0, n = 0;
    while (n < w.length && mass < p * sum) mass += w[n++];
    ids = ids.slice(0, Math.max(1, n));
    w = w.slice(0, ids.length);
    sum = w.reduce((a, b) => a + b, 0);
  }
  return { ids, probs: w.map((x) => x / sum) };
}

/** Draws the next token from `logits[offset .. offset+vocab)`. */
export function sample(
  logits: ArrayLike<number>,
  vocab: number,
  o: SampleOptions,
  rng: Random,
  offset = 0,
): number {
  const { ids, probs } = samplingDistribution(logits, vocab, o, offset);
  if (ids.length === 1) return ids[0];
  let u = rng.next();
  for (let j = 0; j < ids.length; j++) {
    u -= probs[j];
    if (u < 0) return ids[j];
  }
  return ids[ids.length - 1];
}
