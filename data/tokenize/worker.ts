/**
 * Tokeniser worker: receives { id, bytes } (a UTF-8 chunk cut after a "\n") or
 * { id, rows }, answers { id, tokens } (transferred) or { id, error }.
 * For `deno compile`, pass `--include data/tokenize/worker.ts`; without it the
 * pool falls back to the main thread.
 */
import { tokenizeRowList, tokenizeTextChunk } from "./core.ts";

interface Job {
  id: number;
  addEos: boolean;
  bytes?: Uint8Array;
  rows?: string[];
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<Job>) => void) | null;
  postMessage(msg: unknown, transfer?: Transferable[]): void;
};

scope.onmessage = (e: MessageEvent<Job>) => {
  const { id, addEos, bytes, rows } = e.data;
  try {
    const tokens = bytes ? tokenizeTextChunk(bytes, addEos) : tokenizeRowList(rows ?? [], addEos);
    scope.postMessage({ id, tokens }, [tokens.buffer as ArrayBuffer]);
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
