/**
 * Per-dispatch GPU timing (timestamp queries): each dispatch runs in its own
 * compute pass bracketed by two timestamps. Per kernel name it returns the
 * dispatch count, the GPU milliseconds and the work done, where the dispatch
 * says it: the multiply-adds of a GEMM (from its parameters) and the bytes of
 * the tensors it bound (each bound tensor counted once: exact for an op that
 * reads every input and writes every output once, an undercount for ops that
 * reuse data, an overcount for gathers and strided copies that touch part of a
 * bound tensor). Used by `Engine.startTiming` / `stopTiming`.
 */

const QUERIES_PER_SET = 4096;

/** One kernel name's dispatches under timing. */
export interface KernelTiming {
  count: number;
  /** GPU milliseconds, summed */
  ms: number;
  /** floating-point operations (2 per multiply-add); 0 where the parameters do not say */
  flops: number;
  /** bytes of the tensors bound, each once per dispatch */
  bytes: number;
}

/**
 * FLOPs of one dispatch of a GEMM kernel (the uniforms of
 * kernels/matmul/tile_config.ts GEMM_PARAMS: M, N, K, nSplit; the grid's z is
 * batch × nSplit and the split-K slices cover K once): 2·M·N·K per batch
 * entry. 0 for any other kernel.
 */
export function dispatchFlops(params: Record<string, number>, gz: number): number {
  const { M, N, K, nSplit } = params;
  if (M === undefined || N === undefined || K === undefined || !nSplit) return 0;
  return 2 * M * N * K * (gz / nSplit);
}

interface QuerySetState {
  set: GPUQuerySet;
  names: string[];
  flops: number[];
  bytes: number[];
}

/** Records timed dispatches and resolves their timestamps (one wait, at `resolve`). */
export class DispatchTimer {
  #sets: QuerySetState[] = [];
  #current: QuerySetState | null = null;
  #used = 0;

  constructor(readonly device: GPUDevice) {}

  /** Records one dispatch in its own pass on `encoder`; `encode` sets pipeline, bindings, grid. */
  dispatch(
    encoder: GPUCommandEncoder,
    name: string,
    work: { flops: number; bytes: number },
    encode: (pass: GPUComputePassEncoder) => void,
  ): void {
    if (!this.#current || this.#used + 2 > QUERIES_PER_SET) {
      this.#current = {
        set: this.device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }),
        names: [],
        flops: [],
        bytes: [],
      };
      this.#sets.push(this.#current);
      this.#used = 0;
    }
    const pass = encoder.beginComputePass({
      timestampWrites: {
        querySet: this.#current.set,
        beginningOfPassWriteIndex: this.#used,
        endOfPassWriteIndex: this.#used + 1,
      },
    });
    encode(pass);
    pass.end();
    this.#current.names.push(name);
    this.#current.flops.push(work.flops);
    this.#current.bytes.push(work.bytes);
    this.#used += 2;
  }

  /** Reads the timestamps back (after the recorded work was submitted) and frees the query sets. */
  async resolve(): Promise<Map<string, KernelTiming>> {
    const out = new Map<string, KernelTiming>();
    for (const qs of this.#sets) {
      const n = qs.names.length * 2;
      if (!n) continue;
      const resolve = this.device.createBuffer({
        size: n * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const staging = this.device.createBuffer({
        size: n * 8,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const enc = this.device.createCommandEncoder();
      enc.resolveQuerySet(qs.set, 0, n, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, staging, 0, n * 8);
      this.device.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const ts = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      qs.names.forEach((name, i) => {
        const r = out.get(name) ?? { count: 0, ms: 0, flops: 0, bytes: 0 };
        r.count++;
        r.ms += Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
        r.flops += qs.flops[i];
        r.bytes += qs.bytes[i];
        out.set(name, r);
      });
      staging.destroy();
      resolve.destroy();
      qs.set.destroy();
    }
    this.#sets = [];
    this.#current = null;
    return out;
  }
}
