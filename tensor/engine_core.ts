/** The Engine class: pipelines, the single-pass recorder, the uniform arena, timing, reads. */
import type { Gpu, GpuInfo } from "./device.ts";
import { bufferId, BufferPool, type PoolStats } from "./pool.ts";
import { BasedError, formatBytes } from "../errors.ts";
import { type DType, DTYPE_BYTES, shapeSize, shapeStr, Storage, Tensor } from "./tensor.ts";
import { ARENA_SLOTS, type Grid, type Kernel, SLOT } from "./kernel.ts";
import { buildPipeline } from "./pipeline.ts";
import { dispatchFlops, DispatchTimer, type KernelTiming } from "./timing.ts";

export class Engine {
  readonly device: GPUDevice;
  readonly info: GpuInfo;
  readonly pool: BufferPool;
  readonly limits: Record<string, number>;
  readonly hasTimestamps: boolean;
  readonly hasF16: boolean;

  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #arenaBuf: GPUBuffer;
  #arena = new ArrayBuffer(SLOT * ARENA_SLOTS);
  #arenaU32 = new Uint32Array(this.#arena);
  #arenaI32 = new Int32Array(this.#arena);
  #arenaF32 = new Float32Array(this.#arena);
  #slots = 0;
  #bindGroups = new Map<string, GPUBindGroup>();
  #compact: boolean;
  #error: string | null = null;
  #timestampNext: { querySet: GPUQuerySet } | null = null;
  /** dispatch counter since the last reset (profiling and tests) */
  dispatches = 0;
  submits = 0;
  /** when set, counts dispatches per kernel name (tests check which kernel variant ran) */
  profile: Map<string, number> | null = null;
  #timing: DispatchTimer | null = null;

  constructor(readonly gpu: Gpu) {
    this.device = gpu.device;
    this.info = gpu.info;
    this.limits = gpu.info.limits;
    this.hasTimestamps = gpu.hasTimestamps;
    this.hasF16 = gpu.hasF16;
    this.#compact = gpu.info.softwareGl;
    this.pool = new BufferPool(
      this.device,
      this.limits.maxStorageBufferBindingSize ?? 128 << 20,
      this.limits.maxBufferSize ?? 256 << 20,
    );
    this.#arenaBuf = this.device.createBuffer({
      size: SLOT * ARENA_SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.device.addEventListener("uncapturederror", (ev) => {
      const msg = (ev as GPUUncapturedErrorEvent).error?.message ?? String(ev);
      if (!this.#error) {
        this.#error = msg.split("\n").filter((l) => l.trim()).slice(0, 6).join(" | ");
      }
    });
  }

  get maxBinding(): number {
    return this.pool.maxBinding;
  }

  // ---------------------------------------------------------------- tensors

  /** An uninitialised tensor from the pool (contents are garbage). */
  empty(shape: readonly number[], dtype: DType = "f32", what?: string): Tensor {
    const n = shapeSize(shape);
    const bytes = Math.max(4, n * DTYPE_BYTES[dtype]);
    const buf = this.pool.acquire(bytes, what ?? `tensor ${shapeStr(shape)}`);
    return new Tensor(new Storage(this, buf, 0, buf.size, true), shape, dtype);
  }

  /** A tensor over a region of a buffer owned elsewhere (not returned to the pool). */
  wrap(
    buffer: GPUBuffer,
    byteOffset: number,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    const bytes = shapeSize(shape) * DTYPE_BYTES[dtype];
    return new Tensor(new Storage(this, buffer, byteOffset, bytes, false), shape, dtype, false);
  }

  /** Uploads host data into a new tensor. */
  tensor(
    data: ArrayLike<number> | Float32Array | Int32Array | Uint32Array,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    const n = shapeSize(shape);
    if (data.length !== n) {
      throw new Error(`tensor(): ${data.length} values for shape ${shapeStr(shape)}`);
    }
    const t = this.empty(shape, dtype);
    this.upload(t, data);
    return t;
  }

  /** Writes host data into an existing tensor (flushes pending work first). */
  upload(t: Tensor, data: ArrayLike<number> | Float32Array | Int32Array | Uint32Array): void {
    t.assertAlive();
    let arr: Float32Array | Int32Array | Uint32Array | Float16Array;
    if (t.dtype === "f32") arr = data instanceof Float32Array ? data : Float32Array.from(data);
    else if (t.dtype === "i32") arr = data instanceof Int32Array ? data : Int32Array.from(data);
    else if (t.dtype === "f16") {
      // rounded to nearest even; writeBuffer needs a multiple of 4 bytes: an odd count writes
      // one padding half (a tensor's storage is at least 4-byte rounded)
      if (data.length !== t.size) throw new Error(`upload(): ${data.length} values for ${t}`);
      arr = new Float16Array(t.size + (t.size & 1));
      arr.set(data as ArrayLike<number>);
    } else arr = data instanceof Uint32Array ? data : Uint32Array.from(data);
    if (t.dtype !== "f16" && arr.length !== t.size) {
      throw new Error(`upload(): ${arr.length} values for ${t}`);
    }
    // a pooled buffer may still be read by recorded-but-unsubmitted work
    this.flush();
    if (arr.length) {
      this.device.queue.writeBuffer(t.buffer, t.byteOffset, arr as Float32Array<ArrayBuffer>);
    }
  }

  /** Reads a tensor back to the host (waits for all recorded work); f16 comes back as f32. */
  async read(t: Tensor): Promise<Float32Array | Int32Array | Uint32Array> {
    t.assertAlive();
    const bytes = t.byteLength;
    this.flush();
    if (bytes === 0) return t.dtype === "f32" ? new Float32Array(0) : new Int32Array(0);
    const staging = this.device.createBuffer({
      size: Math.ceil(bytes / 4) * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(t.buffer, t.byteOffset, staging, 0, staging.size);
    this.device.queue.submit([enc.finish()]);
    this.submits++;
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      this.checkError();
      throw e;
    }
    const copy = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    this.checkError();
    if (t.dtype === "f32") return new Float32Array(copy, 0, t.size);
    if (t.dtype === "f16") return Float32Array.from(new Float16Array(copy, 0, t.size));
    if (t.dtype === "i32") return new Int32Array(copy, 0, t.size);
    return new Uint32Array(copy, 0, t.size);
  }

  async readF32(t: Tensor): Promise<Float32Array> {
    const a = await this.read(t);
    return a instanceof Float32Array ? a : Float32Array.from(a);
  }

  /** Waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkError();
  }

  // ---------------------------------------------------------------- kernels

  #pipeline(k: Kernel): GPUComputePipeline {
    if (k.pipeline && k.compacted === this.#compact) return k.pipeline;
    return buildPipeline(this.device, k, this.#compact);
  }

  /**
   * Whether kernels are compiled with their workgroup arrays compacted (tensor/wgsl_compact.ts):
   * on by default on Mesa's GL path, where it cuts compile times; tests switch it on elsewhere.
   */
  get compactWorkgroup(): boolean {
    return this.#compact;
  }
  set compactWorkgroup(on: boolean) {
    this.#compact = on;
    this.#bindGroups.clear();
  }

  /** Compiles a kernel now and reports WGSL errors as an exception (tests, autotuning). */
  async compile(k: Kernel): Promise<void> {
    this.device.pushErrorScope("validation");
    this.#pipeline(k);
    const err = await this.device.popErrorScope();
    if (err) {
      k.pipeline = undefined;
      throw new Error(`kernel ${k.spec.name} failed to compile: ${err.message}`);
    }
  }

  #bindGroup(k: Kernel, buffers: Tensor[]): GPUBindGroup {
    let key = `${k.id}`;
    for (const t of buffers) {
      key += `|${
        this.pool.ids.get(t.buffer) ?? bufferId(t.buffer)
      }:${t.byteOffset}:${t.byteLength}`;
    }
    let bg = this.#bindGroups.get(key);
    if (!bg) {
      if (this.#bindGroups.size > 20000) this.#bindGroups.clear();
      const entries: GPUBindGroupEntry[] = [{
        binding: 0,
        resource: { buffer: this.#arenaBuf, offset: 0, size: SLOT },
      }];
      buffers.forEach((t, i) => {
        const size = Math.max(4, Math.ceil(t.byteLength / 4) * 4);
        entries.push({
          binding: i + 1,
          resource: { buffer: t.buffer, offset: t.byteOffset, size },
        });
      });
      bg = this.device.createBindGroup({ layout: k.layout!, entries });
      this.#bindGroups.set(key, bg);
    }
    return bg;
  }

  /**
   * Records one dispatch. `bindings` maps every binding name of the kernel to
   * a tensor; `params` gives every uniform; `grid` is the workgroup count.
   */
  run(
    k: Kernel,
    bindings: Record<string, Tensor>,
    params: Record<string, number>,
    grid: Grid,
  ): void {
    const [gx, gy = 1, gz = 1] = grid;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension ?? 65535;
    if (gx > maxWg || gy > maxWg || gz > maxWg) {
      throw new Error(`kernel ${k.spec.name}: grid [${gx},${gy},${gz}] over the limit ${maxWg}`);
    }
    const pipeline = this.#pipeline(k);
    const bufs: Tensor[] = [];
    for (const name of k.bindingNames) {
      const t = bindings[name];
      if (!t) throw new Error(`kernel ${k.spec.name}: binding '${name}' missing`);
      t.assertAlive();
      if (t.byteLength > this.maxBinding) {
        throw new BasedError(
          `${k.spec.name}: tensor ${shapeStr(t.shape)} is ${
            formatBytes(t.byteLength)
          }, over this ` +
            `adapter's max storage binding of ${formatBytes(this.maxBinding)}`,
          "reduce datamodule.batch_size or datamodule.max_length",
        );
      }
      bufs.push(t);
    }
    this.#checkAliasing(k, bufs);
    if (this.#slots >= ARENA_SLOTS) this.flush();
    const slot = this.#slots++;
    const base = slot * (SLOT / 4);
    for (let i = 0; i < k.paramNames.length; i++) {
      const v = params[k.paramNames[i]];
      if (v === undefined) {
        throw new Error(`kernel ${k.spec.name}: param '${k.paramNames[i]}' missing`);
      }
      const ty = k.paramTypes[i];
      if (ty === "f32") this.#arenaF32[base + i] = v;
      else if (ty === "i32") this.#arenaI32[base + i] = v;
      else this.#arenaU32[base + i] = v;
    }
    const bg = this.#bindGroup(k, bufs);
    if (this.#timing) {
      // profiling: each dispatch in its own pass, bracketed by timestamp queries
      this.#pass?.end();
      this.#pass = null;
      this.#encoder ??= this.device.createCommandEncoder();
      const work = {
        flops: dispatchFlops(params, gz),
        bytes: bufs.reduce((s, t) => s + t.byteLength, 0),
      };
      this.#timing.dispatch(this.#encoder, k.spec.name, work, (pass) => {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bg, [slot * SLOT]);
        pass.dispatchWorkgroups(gx, gy, gz);
      });
      this.dispatches++;
      return;
    }
    const pass = this.#beginPass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg, [slot * SLOT]);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.dispatches++;
    if (this.profile) this.profile.set(k.spec.name, (this.profile.get(k.spec.name) ?? 0) + 1);
  }

  /** WebGPU forbids binding one buffer twice in a dispatch when either binding writes. */
  #checkAliasing(k: Kernel, bufs: Tensor[]): void {
    for (let i = 0; i < bufs.length; i++) {
      for (let j = i + 1; j < bufs.length; j++) {
        if (bufs[i].buffer !== bufs[j].buffer) continue;
        const acc = (n: number) => {
          const b = k.spec.bindings[k.bindingNames[n]];
          return typeof b === "string" ? b : b.access;
        };
        if (acc(i) === "rw" || acc(j) === "rw") {
          throw new Error(
            `kernel ${k.spec.name}: '${k.bindingNames[i]}' and '${
              k.bindingNames[j]
            }' are the same ` +
              "buffer and one is written; use an in-place kernel",
          );
        }
      }
    }
  }

  /** Starts per-dispatch GPU timing (adapters with timestamp queries). */
  startTiming(): void {
    if (!this.hasTimestamps) {
      throw new BasedError("this adapter has no timestamp queries: profiling needs them");
    }
    this.flush();
    this.#timing = new DispatchTimer(this.device);
  }

  /**
   * Stops timing and returns, per kernel name, the dispatch count, GPU milliseconds, GEMM FLOPs
   * and bytes bound (tensor/timing.ts).
   */
  async stopTiming(): Promise<Map<string, KernelTiming>> {
    const t = this.#timing;
    this.#timing = null;
    if (!t) return new Map();
    this.flush();
    const out = await t.resolve();
    this.checkError();
    return out;
  }

  #beginPass(): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    this.#encoder ??= this.device.createCommandEncoder();
    const ts = this.#timestampNext;
    this.#pass = this.#encoder.beginComputePass(
      ts
        ? {
          timestampWrites: {
            querySet: ts.querySet,
            beginningOfPassWriteIndex: 0,
            endOfPassWriteIndex: 1,
          },
        }
        : {},
    );
    return this.#pass;
  }

  /** True when work is recorded but not yet submitted. */
  get pending(): boolean {
    return this.#encoder !== null;
  }

  /** Ends the pass, writes the uniform arena and submits. Never waits. */
  flush(): void {
    if (!this.#encoder) return;
    this.#pass?.end();
    this.#pass = null;
    if (this.#slots) {
      this.device.queue.writeBuffer(this.#arenaBuf, 0, this.#arena, 0, this.#slots * SLOT);
    }
    this.device.queue.submit([this.#encoder.finish()]);
    this.submits++;
    this.#encoder = null;
    this.#slots = 0;
    this.checkError();
  }

  checkError(): void {
    if (this.#error) {
      const e = this.#error;
      this.#error = null;
      if (/out of memory|OutOfMemory/i.test(e)) {
        throw new BasedError(`the GPU ran out of memory (${e})`, "reduce datamodule.batch_size");
      }
      throw new Error(`WebGPU error: ${e}`);
    }
  }

  /**
   * Times the dispatches `fn` records, on the GPU (timestamp queries) when the
   * adapter has them, else by the wall clock around submit + wait. In ms.
   */
  async measure(fn: () => void): Promise<number> {
    this.flush();
    if (!this.hasTimestamps) {
      const t0 = performance.now();
      fn();
      await this.sync();
      return performance.now() - t0;
    }
    const querySet = this.device.createQuerySet({ type: "timestamp", count: 2 });
    this.#timestampNext = { querySet };
    try {
      fn();
    } finally {
      this.#timestampNext = null;
    }
    if (!this.#encoder) {
      querySet.destroy();
      return 0;
    }
    this.#pass?.end();
    this.#pass = null;
    const resolve = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
    this.#encoder.copyBufferToBuffer(resolve, 0, staging, 0, 16);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const [t0, t1] = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    resolve.destroy();
    querySet.destroy();
    this.checkError();
    return Number(t1 - t0) / 1e6;
  }

  stats(): PoolStats {
    return this.pool.stats();
  }

  destroy(): void {
    this.flush();
    this.#bindGroups.clear();
    this.pool.trim();
    this.#arenaBuf.destroy();
    this.device.destroy();
  }
}
