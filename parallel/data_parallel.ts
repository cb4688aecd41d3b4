/**
 * Data parallelism over processes (`trainer.devices = N`; the reference's DDP
 * semantics, docs/reference.md, Training):
 * one process per device, launched by `mpirun -np N`; every process holds the
 * whole model, reads its own shard of the data (the TrainSampler's
 * DistributedSampler layout) and, after its accumulation loop, the gradients
 * are averaged over the processes, so every rank applies the same update.
 *
 * Gradients (and, once, the initial weights) travel through the host: each
 * chunk of the ParamStore's gradient arena is cut into fixed buckets (default
 * 4 MiB, `BASED_DDP_BUCKET_MB`), and per bucket, in a fixed order (chunk,
 * then offset):
 *   1. GPU → host: `engine.readF32` of the bucket's slice of the arena;
 *   2. MPI_Allreduce(MPI_IN_PLACE, sum) on the host copy (MPI gives every rank
 *      the same result);
 *   3. host → GPU: `engine.upload` into the same slice.
 * Then one in-place dispatch per chunk multiplies the gradients by 1/world
 * (exact when world is a power of two), recorded, not waited for.
 *
 * What overlaps: readbacks are issued `lookahead` buckets ahead (default 2),
 * and the allreduce is a nonblocking FFI call, so while bucket k is reduced on
 * an MPI thread the copies and mappings of buckets k+1 … k+lookahead proceed,
 * and bucket k−1's upload (queued by writeBuffer, executed with the next
 * submit) runs on the GPU. What does not: the reduction starts only after the
 * whole backward pass (the first readback waits for all recorded work; there
 * are no per-parameter gradient hooks to start buckets early, as torch DDP
 * does); the allreduces themselves are serialised (one MPI call in flight,
 * MPI_THREAD_SERIALIZED); and the optimizer step waits for the last upload.
 *
 * Determinism: the bucket order is fixed by the store's layout, MPI_Allreduce
 * returns the same bits on every rank, and the 1/world scaling is one f32
 * multiply, so the ranks' gradients, and therefore their weights and AdamW
 * moments, stay bit-identical (`assertInSync` checks the weights).
 */
import { defineKernel, type Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import type { ParamStore } from "../tensor/params.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../kernels/wgsl.ts";
import { detectLaunch, type Env, envObject, type MpiLaunch } from "./launch.ts";
import type { ReduceOp } from "./mpi.ts";

/** The collective operations DataParallel uses (Mpi implements them; tests may fake them). */
export interface Communicator {
  readonly rank: number;
  readonly size: number;
  allreduce(buf: Float32Array | Float64Array | Int32Array, op?: ReduceOp): Promise<void>;
  bcast(buf: Float32Array | Float64Array | Int32Array | Uint8Array, root?: number): Promise<void>;
  barrier(): Promise<void>;
  finalize(): Promise<void>;
}

export interface DataParallelOptions {
  /** bytes per bucket (default 4 MiB, or BASED_DDP_BUCKET_MB); rounded to 256-byte multiples */
  bucketBytes?: number;
  /** buckets read back ahead of the one being reduced (default 2) */
  lookahead?: number;
  /** the environment (tests) */
  env?: Env;
  /** where the GPU-pin line goes (default: stderr) */
  log?: (s: string) => void;
}

/** One bucket: an element range of one chunk. */
export interface Bucket {
  chunk: number;
  /** element offset in the chunk */
  start: number;
  length: number;
}

/** Timings of the last allreduceGrads (ms) and what it moved. */
export interface AllreduceStats {
  buckets: number;
  bytes: number;
  /** wall time of the whole call */
  totalMs: number;
  /** time spent waiting for readbacks not yet complete */
  readWaitMs: number;
  /** time spent in MPI_Allreduce */
  mpiMs: number;
}

const ALIGN = 64; // elements: 256-byte offsets (the arenas' parameter alignment)
const DEFAULT_BUCKET = 4 << 20;

const SCALE = defineKernel({
  name: "ddp_scale",
  params: { n: "u32", s: "f32" },
  bindings: { g: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  g[i] = g[i] * P.s;
}`,
});

function launchCommand(devices: number): string {
  return `mpirun -np ${devices} ./based train ... trainer.devices=${devices}`;
}

export class DataParallel {
  readonly rank: number;
  readonly world: number;
  /** rank among this host's processes (picks the GPU) */
  readonly localRank: number;
  readonly bucketBytes: number;
  readonly lookahead: number;
  /** filled by allreduceGrads */
  lastStats: AllreduceStats | null = null;
  #layouts = new WeakMap<ParamStore, { buckets: Bucket[]; tensors: Map<string, Tensor> }>();
  #finalized = false;

  constructor(
    readonly comm: Communicator,
    opts: DataParallelOptions & { localRank?: number } = {},
  ) {
    this.rank = comm.rank;
    this.world = comm.size;
    this.localRank = opts.localRank ?? comm.rank;
    const env = opts.env ?? {};
    const mb = env.BASED_DDP_BUCKET_MB ? Number(env.BASED_DDP_BUCKET_MB) : undefined;
    if (mb !== undefined && !(mb > 0)) {
      throw new BasedError(`BASED_DDP_BUCKET_MB=${env.BASED_DDP_BUCKET_MB} must be > 0`);
    }
    const bytes = opts.bucketBytes ?? (mb !== undefined ? mb * (1 << 20) : DEFAULT_BUCKET);
    this.bucketBytes = Math.max(ALIGN * 4, Math.floor(bytes / (ALIGN * 4)) * ALIGN * 4);
    this.lookahead = Math.max(1, Math.floor(opts.lookahead ?? 2));
  }

  /**
   * Sets up data parallelism for `trainer.devices = devices`:
   * - devices = 1 outside an MPI launch (or in one of size 1): null, and MPI is
   *   never loaded;
   * - otherwise the process must have been started by an MPI launcher with
   *   exactly `devices` processes (else a BasedError saying how to start it);
   *   then GPU pinning is applied when BASED_GPU_PIN is set (parallel/pin.ts,
   *   before any WebGPU adapter is requested), MPI is initialised and its
   *   world size checked.
   */
  static async init(
    devices: number,
    opts: DataParallelOptions = {},
  ): Promise<DataParallel | null> {
    if (!Number.isInteger(devices) || devices < 1) {
      throw new BasedError(`trainer.devices must be a positive integer, got ${devices}`);
    }
    const env = opts.env ?? envObject();
    const launch: MpiLaunch | null = detectLaunch(env);
    if (devices === 1) {
      if (!launch || launch.size <= 1) return null;
      throw new BasedError(
        `trainer.devices=1, but ${launch.launcher === "openmpi" ? "mpirun" : "the MPI launcher"} ` +
          `started ${launch.size} processes`,
        `set trainer.devices=${launch.size}, or run without mpirun`,
      );
    }
    if (!launch) {
      throw new BasedError(
        `trainer.devices=${devices} needs ${devices} processes: run \`${launchCommand(devices)}\``,
      );
    }
    if (launch.size !== 0 && launch.size !== devices) {
      throw new BasedError(
        `trainer.devices=${devices} but the MPI launcher started ${launch.size} processes: ` +
          `run \`${launchCommand(devices)}\``,
      );
    }
    if (env.BASED_GPU_PIN) {
      const { applyPin } = await import("./pin.ts");
      const r = await applyPin({ strategy: env.BASED_GPU_PIN, localRank: launch.localRank, env });
      (opts.log ?? ((l: string) => console.error(l)))(`rank ${launch.rank}: GPU pin ${r.summary}`);
    }
    const { Mpi } = await import("./mpi.ts");
    const mpi = Mpi.open({ env }).init("serialized");
    if (mpi.size !== devices) {
      await mpi.finalize();
      throw new BasedError(
        `trainer.devices=${devices} but MPI_COMM_WORLD has ${mpi.size} processes: ` +
          `run \`${launchCommand(devices)}\``,
      );
    }
    return new DataParallel(mpi, { ...opts, env, localRank: launch.localRank });
  }

  /** Rank 0 writes checkpoints, metrics and logs. */
  get isRoot(): boolean {
    return this.rank === 0;
  }

  /** The fixed bucket list of a store: chunk by chunk, offset order, 256-byte aligned. */
  buckets(store: ParamStore): Bucket[] {
    return this.#layout(store).buckets;
  }

  #layout(store: ParamStore) {
    let l = this.#layouts.get(store);
    if (l) return l;
    const per = this.bucketBytes / 4;
    const buckets: Bucket[] = [];
    store.chunkSizes.forEach((n, chunk) => {
      for (let start = 0; start < n; start += per) {
        buckets.push({ chunk, start, length: Math.min(per, n - start) });
      }
    });
    l = { buckets, tensors: new Map() };
    this.#layouts.set(store, l);
    return l;
  }

  #slice(store: ParamStore, kind: "values" | "grads", b: Bucket): Tensor {
    const l = this.#layout(store);
    const key = `${kind}:${b.chunk}:${b.start}`;
    let t = l.tensors.get(key);
    if (!t) {
      const buf = kind === "values" ? store.values[b.chunk] : store.grads[b.chunk];
      t = store.engine.wrap(buf, b.start * 4, [b.length]);
      l.tensors.set(key, t);
    }
    return t;
  }

  /**
   * Reads the buckets of `kind` in order, `lookahead` ahead, calling `each`
   * on every host copy in turn (the next reads proceed while it runs).
   */
  async #stream(
    store: ParamStore,
    kind: "values" | "grads",
    each: (host: Float32Array, b: Bucket, t: Tensor) => Promise<void>,
    stats?: AllreduceStats,
  ): Promise<void> {
    const e = store.engine;
    const bs = this.buckets(store);
    const reads: (Promise<Float32Array> | undefined)[] = [];
    const start = (k: number) => {
      if (k < bs.length) reads[k] = e.readF32(this.#slice(store, kind, bs[k]));
    };
    for (let k = 0; k < Math.min(this.lookahead, bs.length); k++) start(k);
    try {
      for (let k = 0; k < bs.length; k++) {
        const t0 = performance.now();
        const host = await reads[k]!;
        reads[k] = undefined;
        if (stats) stats.readWaitMs += performance.now() - t0;
        start(k + this.lookahead);
        await each(host, bs[k], this.#slice(store, kind, bs[k]));
      }
    } finally {
      // after a failure, readbacks still in flight must not reject unobserved
      for (const p of reads) p?.catch(() => {});
    }
  }

  /**
   * Averages the gradients over the ranks, in place: per bucket readback,
   * MPI_Allreduce (sum), upload; then × 1/world on the GPU (recorded). Call
   * after the last backward of a step, before clipping. Every rank must call
   * it, for the same store.
   */
  async allreduceGrads(store: ParamStore): Promise<void> {
    this.#alive();
    const t0 = performance.now();
    const stats: AllreduceStats = { buckets: 0, bytes: 0, totalMs: 0, readWaitMs: 0, mpiMs: 0 };
    const e = store.engine;
    await this.#stream(store, "grads", async (host, _b, t) => {
      const m0 = performance.now();
      await this.comm.allreduce(host, "sum");
      stats.mpiMs += performance.now() - m0;
      e.upload(t, host);
      stats.buckets++;
      stats.bytes += host.byteLength;
    }, stats);
    this.#scale(e, store, 1 / this.world);
    stats.totalMs = performance.now() - t0;
    this.lastStats = stats;
  }

  #scale(e: Engine, store: ParamStore, s: number): void {
    if (s === 1) return;
    for (let c = 0; c < store.grads.length; c++) {
      const n = store.chunkSizes[c];
      e.run(SCALE, { g: store.chunkTensor("grads", c) }, { n, s }, grid1d(n));
    }
  }

  /**
   * Copies rank 0's weights to every rank (values arena, padding included).
   * Call once after the weights are initialised or loaded.
   */
  async broadcastParams(store: ParamStore): Promise<void> {
    this.#alive();
    const e = store.engine;
    if (this.isRoot) {
      await this.#stream(store, "values", (host) => this.comm.bcast(host, 0));
      return;
    }
    for (const b of this.buckets(store)) {
      const host = new Float32Array(b.length);
      await this.comm.bcast(host, 0);
      e.upload(this.#slice(store, "values", b), host);
    }
  }

  /** The mean over ranks of each value (float64 allreduce): logged losses. */
  async allreduceMean(values: number[]): Promise<number[]> {
    this.#alive();
    const buf = Float64Array.from(values);
    await this.comm.allreduce(buf, "sum");
    return [...buf].map((v) => v / this.world);
  }

  /**
   * Checks that every rank holds bit-identical weights (one readback and two
   * small allreduces); throws a BasedError naming the first chunk that differs.
   */
  async assertInSync(store: ParamStore): Promise<void> {
    this.#alive();
    const sums: number[] = [];
    for (let c = 0; c < store.values.length; c++) {
      const v = new Uint32Array(
        (await store.engine.readF32(store.chunkTensor("values", c))).buffer,
      );
      // FNV-1a over the bits, as an exact integer in a double
      let h = 0x811c9dc5;
      for (let i = 0; i < v.length; i++) h = Math.imul(h ^ v[i], 0x01000193) >>> 0;
      sums.push(h);
    }
    const lo = Float64Array.from(sums), hi = Float64Array.from(sums);
    await this.comm.allreduce(lo, "min");
    await this.comm.allreduce(hi, "max");
    for (let c = 0; c < sums.length; c++) {
      if (lo[c] !== hi[c]) {
        throw new BasedError(`the ranks' weights differ (chunk ${c}) on rank ${this.rank}`);
      }
    }
  }

  barrier(): Promise<void> {
    this.#alive();
    return this.comm.barrier();
  }

  /** Waits for every rank, then MPI_Finalize. Call once, at the end. */
  async finalize(): Promise<void> {
    if (this.#finalized) return;
    await this.comm.barrier();
    this.#finalized = true;
    await this.comm.finalize();
  }

  #alive(): void {
    if (this.#finalized) throw new Error("DataParallel: already finalized");
  }
}
