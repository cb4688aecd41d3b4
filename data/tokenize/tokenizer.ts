/**
 * The GPT-2 tokenizer (byte-level BPE, 50,257 ids; the reference's
 * `AutoTokenizer.from_pretrained("gpt2")`), offline via
 * gpt-tokenizer's `r50k_base` tables, which are GPT-2's.
 *
 * `encode` behaves like HF `AutoTokenizer.from_pretrained("gpt2")` on plain
 * text: the literal `<|endoftext|>` is matched as the special token 50256 (HF
 * splits added tokens out before BPE); everything else is ordinary BPE. The
 * corpus pipeline never appends the *text* `<|endoftext|>`: it appends the id
 * (`encodeRow`).
 */
import bpeApi, { encode as bpeEncode } from "gpt-tokenizer/r50k_base";

/** `<|endoftext|>` */
export const EOS = 50256;
export const EOS_TEXT = "<|endoftext|>";
export const VOCAB_SIZE = 50257;
/**
 * Identifies the tokenizer in token-cache metadata. Bump it when the
 * tokenizer package or the encoding rules change: caches built by another id
 * are rebuilt.
 */
export const TOKENIZER_ID = "gpt2-bpe/r50k_base/gpt-tokenizer@4.0.0";
/** The tokenizer's name as the reference's cache-directory name spells it. */
export const TOKENIZER_NAME = "gpt2";

// no special-token handling inside the library: we split on EOS_TEXT ourselves
const PLAIN = { disallowedSpecial: new Set<string>() };

/** GPT-2 ids of `text`; `<|endoftext|>` in the text becomes 50256 (as HF does). */
export function encode(text: string): number[] {
  if (!text.includes(EOS_TEXT)) return bpeEncode(text, PLAIN);
  const out: number[] = [];
  const parts = text.split(EOS_TEXT);
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) out.push(EOS);
    if (parts[i].length > 0) { for (const t of bpeEncode(parts[i], PLAIN)) out.push(t); }
  }
  return out;
}

/**
 * One corpus row (as `process_dataset`): "" gives nothing, otherwise encode(row) + [EOS] when
 * addEos.
 */
export function encodeRow(row: string, addEos = true): number[] {
  if (row.length === 0) return [];
  const ids = encode(row);
  if (addEos) ids.push(EOS);
  return ids;
}

// gpt-tokenizer's own decode shares one streaming TextDecoder across calls
// (a partial UTF-8 sequence left by one call leaks into the next), so we decode
// from each id's bytes ourselves.
type Core = { tryDecodeToken(id: number): string | Uint8Array | undefined };
const core = (bpeApi as unknown as { bytePairEncodingCoreProcessor: Core })
  .bytePairEncodingCoreProcessor;
const utf8 = new TextEncoder();
const tokenBytesCache = new Map<number, Uint8Array>();

/** The bytes of one id (50256 → the bytes of `<|endoftext|>`). */
export function tokenBytes(id: number): Uint8Array {
  let b = tokenBytesCache.get(id);
  if (b) return b;
  const t = Number.isInteger(id) && id >= 0 && id < VOCAB_SIZE
    ? core.tryDecodeToken(id)
    : undefined;
  if (t === undefined) throw new RangeError(`token id ${id} is outside the GPT-2 vocabulary`);
  b = typeof t === "string" ? utf8.encode(t) : t;
  tokenBytesCache.set(id, b);
  return b;
}

/** The UTF-8 bytes of ids, concatenated. */
export function decodeBytes(ids: Iterable<number>): Uint8Array {
  const parts: Uint8Array[] = [];
  let n = 0;
  for (const id of ids) {
    const b = tokenBytes(id);
    parts.push(b);
    n += b.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Text of ids; 50256 decodes to `<|endoftext|>`; invalid UTF-8 becomes U+FFFD. Stateless. */
export function decode(ids: Iterable<number>): string {
  return new TextDecoder().decode(decodeBytes(ids));
}

/**
 * Incremental decoding for generation: `push(id)` returns the text that is
 * complete so far (a character split over several ids appears once its last
 * byte arrives); `flush()` returns what is left (U+FFFD for an unfinished
 * character).
 */
export class TokenStreamDecoder {
  #d = new TextDecoder();
  push(id: number): string {
    return this.#d.decode(tokenBytes(id), { stream: true });
  }
  flush(): string {
    return this.#d.decode();
  }
}
