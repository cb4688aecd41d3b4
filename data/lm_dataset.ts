/**
 * Language-model windows, training order and evaluation batches (the reference's
 * `train/datamodules/datasets/lm_dataset.py::LMDataset` and
 * `train/datamodules/fault_tolerant_sampler.py`).
 *
 * Windows: a split of N tokens gives n_seq = floor((N − 1) / L) examples;
 * example i has inputs tokens[L·i, L·i + L) and labels tokens[L·i + 1, L·i + L + 1)
 * (non-overlapping, stride L; the trailing N − 1 − L·n_seq tokens are unused).
 *
 * Training order (`TrainSampler`), our documented replacement for torch's
 * `randperm` (bit-exact torch streams are out of scope):
 * - epoch e's permutation of 0..n−1 is a Fisher–Yates shuffle
 *   (for i = n−1 … 1: j = floor(u · (i + 1)), swap p[i], p[j]) driven by a
 *   mulberry32 stream whose initial state is fmix32((seed + e) mod 2³²)
 *   (murmur3's finaliser), u = next32 / 2³²;
 * - DDP layout as `DistributedSampler`: the permutation is padded by wrapping
 *   around to a multiple of the world size W (p[0], p[1], … appended), and rank
 *   r takes positions r, r + W, r + 2W, …; every rank gets ceil(n / W) samples;
 * - batches are consecutive runs of `batchSize` of the rank's samples; the last
 *   batch of an epoch may be smaller (`drop_last = false`);
 * - the position is `{ epoch, index }` (index = samples of this rank consumed in
 *   that epoch), saved with `state()` and restored exactly with `restore()`.
 */
import { BasedError } from "../errors.ts";

/** A batch of B windows as row-major [B, L] int32 arrays. */
export interface LMBatch {
  inputs: Int32Array;
  labels: Int32Array;
}

export class LMDataset {
  readonly tokens: Uint16Array;
  readonly seqLen: number;
  readonly #n: number;

  constructor(tokens: Uint16Array, seqLen: number) {
    if (!Number.isInteger(seqLen) || seqLen < 1) {
      throw new BasedError(`max_length must be a positive integer, got ${seqLen}`);
    }
    this.tokens = tokens;
    this.seqLen = seqLen;
    this.#n = tokens.length > 0 ? Math.floor((tokens.length - 1) / seqLen) : 0;
  }

  /** Number of windows, floor((N − 1) / L). */
  get length(): number {
    return this.#n;
  }

  /** Tokens in the split. */
  get numTokens(): number {
    return this.tokens.length;
  }

  #check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.#n) {
      throw new RangeError(`sequence index ${i} outside [0, ${this.#n})`);
    }
  }

  /** Example i: inputs tokens[L·i, L·i + L), labels shifted by one. */
  example(i: number): LMBatch {
    return this.batch([i]);
  }

  /** Examples `indices` stacked into [B, L] arrays. */
  batch(indices: readonly number[]): LMBatch {
    const L = this.seqLen;
    const inputs = new Int32Array(indices.length * L);
    const labels = new Int32Array(indices.length * L);
    for (let b = 0; b < indices.length; b++) {
      const i = indices[b];
      this.#check(i);
      const s = i * L;
      inputs.set(this.tokens.subarray(s, s + L), b * L);
      labels.set(this.tokens.subarray(s + 1, s + L + 1), b * L);
    }
    return { inputs, labels };
  }
}

/** murmur3 fmix32: spreads a seed over all 32 bits. */
function fmix32(h: number): number {
  h >>>= 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The permutation of 0..n−1 for `seed` and `epoch` (module comment). */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  let s = fmix32((seed + epoch) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    // mulberry32
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    const j = Math.floor(u * (i + 1));
    const tmp = p[i];
    p[i] = p[j];
    p[j] = tmp;
  }
  return p;
}

/** Position of a TrainSampler: `index` samples of this rank consumed in `epoch`. */
export interface SamplerState {
  epoch: number;
  index: number;
}

export interface TrainSamplerOptions {
  /** base seed; epoch e uses seed + e (DistributedSampler's default seed is 0) */
  seed?: number;
  batchSize: number;
  worldSize?: number;
  rank?: number;
  /** false: identity order every epoch */
  shuffle?: boolean;
  /** drop each epoch's last incomplete batch (the reference: false) */
  dropLast?: boolean;
}

/** The training order of one rank: batches of sequence indices, epoch after epoch. */
export class TrainSampler {
  readonly n: number;
  readonly seed: number;
  readonly batchSize: number;
  readonly worldSize: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  #epoch = 0;
  #index = 0;
  #order: Uint32Array | null = null;
  #orderEpoch = -1;

  constructor(n: number, o: TrainSamplerOptions) {
    this.n = n;
    this.seed = o.seed ?? 0;
    this.batchSize = o.batchSize;
    this.worldSize = o.worldSize ?? 1;
    this.rank = o.rank ?? 0;
    this.shuffle = o.shuffle ?? true;
    this.dropLast = o.dropLast ?? false;
    if (!Number.isInteger(n) || n < 1) {
      throw new BasedError(`the training split has ${n} sequences`, "it needs at least one");
    }
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) {
      throw new BasedError(`batch size must be a positive integer, got ${this.batchSize}`);
    }
    if (!Number.isInteger(this.worldSize) || this.worldSize < 1) {
      throw new BasedError(`world size must be a positive integer, got ${this.worldSize}`);
    }
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.worldSize) {
      throw new BasedError(`rank ${this.rank} outside [0, ${this.worldSize})`);
    }
    if (!Number.isInteger(this.seed)) {
      throw new BasedError(`seed must be an integer, got ${this.seed}`);
    }
    if (this.dropLast && this.samplesPerRank < this.batchSize) {
      throw new BasedError(
        `${this.samplesPerRank} sequences per rank is less than one batch of ${this.batchSize}`,
        "with drop_last every epoch would be empty",
      );
    }
  }

  /** ceil(n / W): samples each rank sees per epoch (with wrap-around padding). */
  get samplesPerRank(): number {
    return Math.ceil(this.n / this.worldSize);
  }

  /** Samples of this rank actually used per epoch (less than samplesPerRank under dropLast). */
  get usedPerEpoch(): number {
    const s = this.samplesPerRank;
    return this.dropLast ? s - (s % this.batchSize) : s;
  }

  /** Batches per epoch on this rank. */
  get batchesPerEpoch(): number {
    return Math.ceil(this.usedPerEpoch / this.batchSize);
  }

  /** The epoch the next batch comes from. */
  get epoch(): number {
    return this.#epoch;
  }

  /** This rank's samples of `epoch`, in order (length samplesPerRank). */
  epochIndices(epoch: number): Uint32Array {
    const perm = this.shuffle ? this.#permutation(epoch) : null;
    const m = this.samplesPerRank;
    const out = new Uint32Array(m);
    for (let k = 0; k < m; k++) {
      const pos = (this.rank + k * this.worldSize) % this.n; // wrap-around padding
      out[k] = perm ? perm[pos] : pos;
    }
    return out;
  }

  #permutation(epoch: number): Uint32Array {
    if (this.#orderEpoch !== epoch || !this.#order) {
      this.#order = epochPermutation(this.n, this.seed, epoch);
      this.#orderEpoch = epoch;
    }
    return this.#order;
  }

  /** The next batch's sequence indices; moves to the next epoch after the last batch. */
  next(): number[] {
    const used = this.usedPerEpoch;
    const perm = this.shuffle ? this.#permutation(this.#epoch) : null;
    const end = Math.min(used, this.#index + this.batchSize);
    const out: number[] = [];
    for (let k = this.#index; k < end; k++) {
      const pos = (this.rank + k * this.worldSize) % this.n;
      out.push(perm ? perm[pos] : pos);
    }
    this.#index = end;
    if (this.#index >= used) {
      this.#epoch++;
      this.#index = 0;
    }
    return out;
  }

  /** The position, to save in a checkpoint. */
  state(): SamplerState {
    return { epoch: this.#epoch, index: this.#index };
  }

  /** Continues exactly from a saved position. */
  restore(s: SamplerState): void {
    const epoch = Number(s?.epoch), index = Number(s?.index);
    if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0) {
      throw new BasedError(
        `invalid data position ${JSON.stringify(s)}`,
        "expected { epoch, index }",
      );
    }
    if (index > this.usedPerEpoch) {
      throw new BasedError(
        `data position index ${index} exceeds the ${this.usedPerEpoch} samples per epoch of this rank`,
        "the training split or world size changed since the checkpoint",
      );
    }
    this.#epoch = index === this.usedPerEpoch ? epoch + 1 : epoch;
    this.#index = index === this.usedPerEpoch ? 0 : index;
  }
}

/** An evaluation batch: the sequence indices and their windows. */
export interface EvalBatch extends LMBatch {
  indices: number[];
}

/**
 * Validation/test batches (sequential, as the reference's loaders): sequences 0, 1, … n−1 in order,
 * `batchSize` at a time, the last batch possibly smaller. With worldSize > 1, rank r takes
 * sequences r, r + W, … (no padding, so no sequence is counted twice).
 */
export function* evalBatches(
  ds: LMDataset,
  batchSize: number,
  o: { worldSize?: number; rank?: number } = {},
): Generator<EvalBatch> {
  const W = o.worldSize ?? 1, r = o.rank ?? 0;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new BasedError(`eval batch size must be a positive integer, got ${batchSize}`);
  }
  let cur: number[] = [];
  for (let i = r; i < ds.length; i += W) {
    cur.push(i);
    if (cur.length === batchSize) {
      yield { indices: cur, ...ds.batch(cur) };
      cur = [];
    }
  }
  if (cur.length) yield { indices: cur, ...ds.batch(cur) };
}
