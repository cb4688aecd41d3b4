/**
 * Checks the trainer makes before (and at) its first step, so that a bad
 * combination of data, model and adapter is a clear one-line error:
 *
 * - `checkSequenceLength`: `datamodule.max_length` must not exceed what the
 *   model was configured for. Rotary models (Based: `max_position_embeddings:
 *   0`) have no position table, so `n_positions` does not bound them; the
 *   bounds are a mixer's `l_max` (the sequence length it is built for) and,
 *   for learned absolute positions, `max_position_embeddings`.
 * - `checkTokenIds`: every token id of the loaded splits must be inside
 *   `model.config.vocab_size` (otherwise the embedding gather or the loss reads
 *   outside the table).
 * - `bindingLimitError`: a tensor over the adapter's max storage binding at
 *   the first step is answered with the largest micro-batch that fits,
 *   measured by small probe steps (B = 2 and 3, after a warm-up: every pool
 *   buffer's size as a + c·B) rather than guessed.
 */
import type { Engine } from "../tensor/engine.ts";
import { BasedError, formatBytes } from "../errors.ts";
import type { DataModule } from "../data/datamodule.ts";
import { type BasedConfig, usedSections } from "../model/config.ts";

/** Refuses a `datamodule.max_length` longer than the model allows (see the module comment). */
export function checkSequenceLength(config: BasedConfig, maxLength: number): void {
  const bounds: [string, number][] = [];
  for (const section of usedSections(config)) {
    const l = config.layers.find((m) => m.section === section)?.lMax;
    if (l !== undefined) bounds.push([`model.config.${section}.l_max`, l]);
  }
  const mpe = config.maxPositionEmbeddings;
  if (mpe !== undefined) bounds.push(["model.config.max_position_embeddings", mpe]);
  for (const [key, limit] of bounds) {
    if (maxLength > limit) {
      throw new BasedError(
        `datamodule.max_length ${maxLength} is longer than the model allows: ${key} is ${limit}`,
        `set datamodule.max_length ≤ ${limit} or raise ${key}`,
      );
    }
  }
}

/** Refuses token ids outside `[0, vocabSize)` in any loaded split. */
export function checkTokenIds(dm: DataModule, vocabSize: number, splits: string[]): void {
  for (const s of splits) {
    const ds = s === "train" ? dm.train : s === "validation" ? dm.validation : dm.test;
    const t = ds.tokens;
    let max = 0;
    for (let i = 0; i < t.length; i++) if (t[i] > max) max = t[i];
    if (max >= vocabSize) {
      throw new BasedError(
        `the ${dm.info.dataset} ${s} split has token id ${max}, outside model.config.vocab_size ` +
          `${vocabSize}`,
        `set model.config.vocab_size to at least ${max + 1} (the GPT-2 tokenizer has 50257 ids)`,
      );
    }
  }
}

/**
 * Pool buffers whose size the code caps by the max binding (model/lm_head.ts
 * `headChunkRows`, kernels/matmul/ split-K): linear at small batches, so the
 * probes must not extrapolate them. Matched on the labels those modules give.
 */
const ADAPTIVE = /^(logits chunk|split-K partials) /;

/** True for the pool's / engine's "over this adapter's max storage binding" errors. */
export function isBindingLimitError(e: unknown): e is BasedError {
  return e instanceof BasedError && /max storage binding/.test(e.message);
}

/**
 * The error to show when the first step hit the max storage binding at
 * micro-batch `b` (`original`): the largest micro-batch whose buffers all fit,
 * from probe steps `probe(1)`, `probe(2)`, `probe(3)` (each records a forward
 * and backward of that many sequences).
 */
export function bindingLimitError(
  e: Engine,
  original: BasedError,
  b: number,
  batchSize: number,
  probe: (sequences: number) => void,
): BasedError {
  const limit = e.maxBinding;
  const what = original.message.replace(/ \(reduce datamodule[^)]*\)$/, "");
  const sizes: number[][] = [];
  const pool = e.pool;
  const acquire = pool.acquire;
  try {
    // a first step allocates once-only buffers (caches): warm up, then measure B = 2 and 3
    for (const n of [1, 2, 3]) {
      const rec: number[] = [];
      pool.acquire = (bytes: number, label?: string) => {
        // buffers their kernels size to fit one binding at any batch never limit it
        rec.push(label && ADAPTIVE.test(label) ? 0 : bytes);
        return acquire.call(pool, bytes, label);
      };
      probe(n);
      sizes.push(rec);
    }
  } catch (err) {
    if (!isBindingLimitError(err)) throw err;
    return new BasedError(
      `${what}; even a micro-batch of one sequence does not fit`,
      "reduce datamodule.max_length or the model size (model.config.n_embd, n_inner)",
    );
  } finally {
    pool.acquire = acquire;
  }
  // buffer i of the last two probes: bytes = a + c·B; the largest B with every buffer ≤ limit
  let fit = Infinity;
  let perSeq = 0;
  const [, two, three] = sizes;
  if (two.length === three.length) {
    for (let i = 0; i < two.length; i++) {
      const c = three[i] - two[i], a = two[i] - 2 * c;
      if (c <= 0) continue;
      const k = Math.floor((limit - a) / c);
      if (k < fit) [fit, perSeq] = [k, c];
    }
  }
  if (!Number.isFinite(fit) || fit >= b) {
    // the probes did not line up (shape-dependent control flow): scale the failing tensor
    const m = /\[([\d,]+)\]/.exec(original.message);
    const bytes = m ? m[1].split(",").reduce((p, x) => p * Number(x), 4) : 0;
    fit = bytes > 0 ? Math.floor((b * limit) / bytes) : Math.floor(b / 2);
    perSeq = bytes > 0 ? bytes / b : 0;
  }
  fit = Math.max(1, Math.min(fit, b - 1));
  return new BasedError(
    `${what} at datamodule.batch_size=${batchSize}` +
      (b !== batchSize ? ` (micro-batches of ${b} sequences)` : "") +
      `; the largest micro-batch that fits is ${fit} sequences` +
      (perSeq ? ` (a buffer grows by ${formatBytes(perSeq)} per sequence)` : ""),
    `set datamodule.batch_size=${fit} or less, or reduce datamodule.max_length; ` +
      "train.global_batch_size is kept by more gradient accumulation",
  );
}
