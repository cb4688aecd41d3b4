/**
 * data/tokenize/: the GPT-2 BPE tokenizer (`tokenizer.ts`) and corpus
 * tokenisation (`tokenize.ts`, in worker threads `worker.ts` running `core.ts`).
 */
export * from "./tokenizer.ts";
export { type TokenizeOptions, tokenizeRows, tokenizeTextBytes } from "./tokenize.ts";
