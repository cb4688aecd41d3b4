/**
 * Parameters live in flat arenas: one buffer of values and one of gradients
 * per chunk (a chunk stays under the adapter's max storage binding), each
 * parameter at a 256-byte aligned offset. Parameters are laid out grouped by
 * optimizer group, so the optimizer updates a whole group with one dispatch
 * per chunk, and global-norm clipping reads one buffer per chunk.
 */
import type { Engine } from "./engine.ts";
import { BasedError, formatBytes } from "../errors.ts";
import { shapeSize, shapeStr, type Tensor } from "./tensor.ts";
import { fill } from "./elementwise.ts";
import { BUFFER_USAGE } from "./pool.ts";

export interface ParamSpec {
  name: string;
  shape: number[];
  /** optimizer group name, e.g. "decay" / "no_decay" */
  group: string;
  /** initial values (row-major) */
  init: Float32Array;
}

export interface Param {
  name: string;
  shape: number[];
  group: string;
  size: number;
  /** index of the chunk holding it */
  chunk: number;
  /** element offset inside the chunk */
  offset: number;
  tensor: Tensor;
}

/** A contiguous run of elements of one optimizer group inside one chunk. */
export interface Segment {
  group: string;
  chunk: number;
  /** element range [start, start+length) inside the chunk */
  start: number;
  length: number;
}

const ALIGN = 64; // elements (256 bytes: minStorageBufferOffsetAlignment)

export class ParamStore {
  readonly params: Param[] = [];
  readonly byName: Map<string, Param> = new Map();
  readonly values: GPUBuffer[] = [];
  readonly grads: GPUBuffer[] = [];
  /** element count of each chunk (padded) */
  readonly chunkSizes: number[] = [];
  readonly segments: Segment[] = [];

  /**
   * Lays out and uploads `specs`, grouped in `groupOrder` (then by the specs' order).
   * `opts.maxChunkElements` caps a chunk below the adapter's limit (tests: force several chunks).
   */
  constructor(
    readonly engine: Engine,
    specs: ParamSpec[],
    groupOrder: string[],
    opts: { maxChunkElements?: number } = {},
  ) {
    const cap = Math.min(engine.maxBinding / 4, opts.maxChunkElements ?? Infinity);
    const maxElems = Math.max(ALIGN, Math.floor(cap / ALIGN) * ALIGN);
    const ordered = [...specs].sort((a, b) => rank(a.group) - rank(b.group));
    function rank(g: string) {
      const i = groupOrder.indexOf(g);
      return i < 0 ? groupOrder.length : i;
    }
    let chunk = -1, used = maxElems;
    const placed: { spec: ParamSpec; chunk: number; offset: number }[] = [];
    for (const spec of ordered) {
      const size = shapeSize(spec.shape);
      if (spec.init.length !== size) {
        throw new Error(
          `param ${spec.name}: ${spec.init.length} initial values for ${shapeStr(spec.shape)}`,
        );
      }
      if (size > maxElems) {
        throw new BasedError(
          `parameter ${spec.name} ${shapeStr(spec.shape)} (${
            formatBytes(size * 4)
          }) is over this ` +
            `adapter's max storage binding of ${formatBytes(engine.maxBinding)}`,
          "use a smaller model",
        );
      }
      const padded = Math.ceil(size / ALIGN) * ALIGN;
      if (used + padded > maxElems) {
        chunk++;
        used = 0;
        this.chunkSizes.push(0);
      }
      placed.push({ spec, chunk, offset: used });
      used += padded;
      this.chunkSizes[chunk] = used;
    }
    for (const n of this.chunkSizes) {
      const bytes = Math.max(256, n * 4);
      this.values.push(engine.device.createBuffer({ size: bytes, usage: BUFFER_USAGE }));
      this.grads.push(engine.device.createBuffer({ size: bytes, usage: BUFFER_USAGE }));
    }
    for (const { spec, chunk, offset } of placed) {
      const t = engine.wrap(this.values[chunk], offset * 4, spec.shape);
      t.requiresGrad = true;
      t.name = spec.name;
      t.grad = engine.wrap(this.grads[chunk], offset * 4, spec.shape);
      const p: Param = {
        name: spec.name,
        shape: spec.shape,
        group: spec.group,
        size: shapeSize(spec.shape),
        chunk,
        offset,
        tensor: t,
      };
      this.params.push(p);
      if (this.byName.has(spec.name)) throw new Error(`duplicate parameter ${spec.name}`);
      this.byName.set(spec.name, p);
      engine.device.queue.writeBuffer(
        this.values[chunk],
        offset * 4,
        spec.init as Float32Array<ArrayBuffer>,
      );
    }
    // segments: maximal runs of one group inside one chunk (padding included)
    for (const p of this.params) {
      const last = this.segments[this.segments.length - 1];
      const end = p.offset + Math.ceil(p.size / ALIGN) * ALIGN;
      if (last && last.group === p.group && last.chunk === p.chunk) last.length = end - last.start;
      else {this.segments.push({
          group: p.group,
          chunk: p.chunk,
          start: p.offset,
          length: end - p.offset,
        });}
    }
    this.zeroGrads();
  }

  get(name: string): Tensor {
    const p = this.byName.get(name);
    if (!p) throw new Error(`no parameter named ${name}`);
    return p.tensor;
  }

  /** Total number of parameter values (without padding). */
  get count(): number {
    return this.params.reduce((s, p) => s + p.size, 0);
  }

  /** A whole chunk of values or gradients as one flat tensor. */
  chunkTensor(kind: "values" | "grads", chunk: number): Tensor {
    const buf = kind === "values" ? this.values[chunk] : this.grads[chunk];
    return this.engine.wrap(buf, 0, [this.chunkSizes[chunk]]);
  }

  /** Sets every gradient (and the padding) to zero. */
  zeroGrads(): void {
    for (let c = 0; c < this.grads.length; c++) fill(this.chunkTensor("grads", c), 0);
  }

  /** Reads every parameter's values (or gradients) to the host, by name. */
  async read(kind: "values" | "grads" = "values"): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    const chunks: Float32Array[] = [];
    for (let c = 0; c < this.values.length; c++) {
      chunks.push(await this.engine.readF32(this.chunkTensor(kind, c)));
    }
    for (const p of this.params) {
      out.set(p.name, chunks[p.chunk].slice(p.offset, p.offset + p.size));
    }
    return out;
  }

  /** Overwrites parameter values from host arrays (missing names are an error). */
  load(values: Map<string, Float32Array> | Record<string, Float32Array>): void {
    const get = (n: string) => values instanceof Map ? values.get(n) : values[n];
    this.engine.flush();
    for (const p of this.params) {
      const v = get(p.name);
      if (!v) throw new BasedError(`no values for parameter ${p.name}`);
      if (v.length !== p.size) {
        throw new BasedError(
          `parameter ${p.name}: ${v.length} values, expected ${p.size} ${shapeStr(p.shape)}`,
        );
      }
      this.engine.device.queue.writeBuffer(
        this.values[p.chunk],
        p.offset * 4,
        v as Float32Array<ArrayBuffer>,
      );
    }
  }

  destroy(): void {
    for (const b of [...this.values, ...this.grads]) b.destroy();
  }
}
