/**
 * The per-chunk tokenising work (as `process_dataset`), shared by the main thread and the
 * workers: rows → concatenated uint16 ids, every non-empty row followed by EOS
 * when `addEos`.
 */
import { encodeRow, VOCAB_SIZE } from "./tokenizer.ts";
import { textToRows } from "../rows.ts";

/** A growable uint16 array. */
export class U16Builder {
  #a: Uint16Array;
  #n = 0;
  constructor(capacity = 1 << 16) {
    this.#a = new Uint16Array(Math.max(16, capacity));
  }
  push(ids: number[]): void {
    if (this.#n + ids.length > this.#a.length) {
      const b = new Uint16Array(Math.max(this.#a.length * 2, this.#n + ids.length));
      b.set(this.#a.subarray(0, this.#n));
      this.#a = b;
    }
    for (let i = 0; i < ids.length; i++) this.#a[this.#n++] = ids[i];
  }
  get length(): number {
    return this.#n;
  }
  /** The ids, trimmed to length (a copy only when there is slack). */
  finish(): Uint16Array {
    return this.#n === this.#a.length ? this.#a : this.#a.slice(0, this.#n);
  }
}

/** Tokenises rows in order. Ids must fit uint16 (the GPT-2 vocabulary does). */
export function tokenizeRowList(rows: readonly string[], addEos: boolean): Uint16Array {
  let chars = 0;
  for (const r of rows) chars += r.length;
  const out = new U16Builder(Math.ceil(chars / 3.5) + 16);
  for (const r of rows) {
    const ids = encodeRow(r, addEos);
    for (const id of ids) {
      if (id >= VOCAB_SIZE) throw new Error(`token id ${id} outside the vocabulary`);
    }
    out.push(ids);
  }
  return out.finish();
}

/**
 * Tokenises a chunk of a UTF-8 text file that starts at a line start and ends
 * after a "\n" (or at the end of the file). A leading BOM is kept, as Python's
 * "utf-8" codec keeps it.
 */
export function tokenizeTextChunk(bytes: Uint8Array, addEos: boolean): Uint16Array {
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
  return tokenizeRowList(textToRows(text), addEos);
}
