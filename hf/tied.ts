/**
 * The tied LM head. PyTorch's state_dict of the reference model holds
 * `lm_head.weight` (the same tensor as the word embedding), and
 * `load_state_dict(strict=True)` wants it; based keeps one tensor. Writers add
 * it (`withLmHead`), readers accept files with or without it and check that it
 * equals the embedding (`untieLmHead`): an untied head cannot be represented.
 */
import { BasedError } from "../errors.ts";

export const LM_HEAD = "lm_head.weight";
export const EMBEDDING_NAME = "transformer.embeddings.word_embeddings.weight";

/** Removes `lm_head.weight` from `weights` after checking it equals the embedding (bit for bit). */
export function untieLmHead(weights: Map<string, Float32Array>, file: string): void {
  const head = weights.get(LM_HEAD);
  if (!head) return;
  const emb = weights.get(EMBEDDING_NAME);
  const a = emb && new Uint32Array(emb.buffer, emb.byteOffset, emb.length);
  const b = new Uint32Array(head.buffer, head.byteOffset, head.length);
  let same = !!a && a.length === b.length;
  for (let i = 0; same && i < b.length; i++) same = a![i] === b[i];
  if (!same) {
    throw new BasedError(
      `${file}: '${LM_HEAD}' differs from '${EMBEDDING_NAME}'`,
      "based models tie the LM head to the word embedding; an untied head cannot be loaded",
    );
  }
  weights.delete(LM_HEAD);
}

/** `weights` plus `lm_head.weight` (the embedding's values), as PyTorch's state_dict has it. */
export function withLmHead(weights: Map<string, Float32Array>): Map<string, Float32Array> {
  const emb = weights.get(EMBEDDING_NAME);
  if (!emb || weights.has(LM_HEAD)) return weights;
  return new Map([...weights, [LM_HEAD, emb]]);
}
