/**
 * A size-class buffer pool with byte accounting. Buffers released during
 * recording may be handed out again at once: the queue executes commands in
 * recorded order, so a later dispatch that reuses a buffer always runs after
 * every earlier dispatch that read it.
 */
import { BasedError, formatBytes } from "../errors.ts";

export const BUFFER_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Size class: multiples of 256 B up to 64 KiB, then 8 classes per power of two (<= 12.5% slack). */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (b <= 65536) return b;
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

export interface PoolStats {
  /** bytes held by live tensors (size-class bytes) */
  live: number;
  /** highest `live` since the last resetPeak() */
  peak: number;
  /** bytes of all GPU buffers the pool owns (live + free) */
  reserved: number;
  buffers: number;
  allocations: number;
}

export class BufferPool {
  #free = new Map<number, GPUBuffer[]>();
  #sizes = new WeakMap<GPUBuffer, number>();
  #live = 0;
  #peak = 0;
  #reserved = 0;
  #buffers = 0;
  #allocations = 0;
  #nextId = 1;
  readonly ids: WeakMap<GPUBuffer, number> = new WeakMap();

  constructor(
    readonly device: GPUDevice,
    readonly maxBinding: number,
    readonly maxBuffer: number,
  ) {}

  acquire(bytes: number, what = "tensor"): GPUBuffer {
    if (bytes > this.maxBinding) {
      throw new BasedError(
        `${what} needs a buffer of ${formatBytes(bytes)}, over this adapter's ` +
          `max storage binding of ${formatBytes(this.maxBinding)}`,
        "reduce datamodule.batch_size or datamodule.max_length",
      );
    }
    const cls = Math.min(sizeClass(bytes), Math.max(bytes, this.maxBinding));
    const list = this.#free.get(cls);
    let buf = list?.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size: cls, usage: BUFFER_USAGE });
      this.#sizes.set(buf, cls);
      this.ids.set(buf, this.#nextId++);
      this.#reserved += cls;
      this.#buffers++;
      this.#allocations++;
    }
    this.#live += cls;
    if (this.#live > this.#peak) this.#peak = this.#live;
    return buf;
  }

  release(buf: GPUBuffer): void {
    const cls = this.#sizes.get(buf);
    if (cls === undefined) throw new Error("BufferPool.release: buffer not from this pool");
    this.#live -= cls;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, list = []);
    list.push(buf);
  }

  /** Destroys every free buffer (returns their memory to the driver). */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.#reserved -= this.#sizes.get(b)!;
        this.#buffers--;
        b.destroy();
      }
    }
    this.#free.clear();
  }

  resetPeak(): void {
    this.#peak = this.#live;
  }

  stats(): PoolStats {
    return {
      live: this.#live,
      peak: this.#peak,
      reserved: this.#reserved,
      buffers: this.#buffers,
      allocations: this.#allocations,
    };
  }
}

const foreignIds = new WeakMap<GPUBuffer, number>();
let nextForeign = 1_000_000_000;
export function bufferId(b: GPUBuffer): number {
  let id = foreignIds.get(b);
  if (id === undefined) foreignIds.set(b, id = nextForeign++);
  return id;
}
