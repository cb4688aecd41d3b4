/**
 * Tensors: a shape and dtype over a reference-counted GPU buffer region.
 * Tensors are always contiguous (row-major); `view` only reinterprets the
 * shape. Every handle is disposed once; the buffer goes back to the pool when
 * the last handle is gone. `tidy` disposes every tensor created inside it that
 * is not returned (or `keep`-ed), like a stack frame.
 */
import type { Engine } from "./engine.ts";

/** f16: IEEE half, 2 bytes per element (needs the adapter's shader-f16; `Engine.hasF16`). */
export type DType = "f32" | "i32" | "u32" | "f16";

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, i32: 4, u32: 4, f16: 2 };

/** Owner of a GPU buffer region; shared by all handles (views) of it. */
export class Storage {
  refs = 1;
  constructor(
    readonly engine: Engine,
    readonly buffer: GPUBuffer,
    readonly byteOffset: number,
    readonly byteLength: number,
    /** false for regions of a buffer owned elsewhere (e.g. a flat parameter arena) */
    readonly pooled: boolean,
  ) {}
  retain(): void {
    if (this.refs <= 0) throw new Error("Storage.retain on a released storage");
    this.refs++;
  }
  release(): void {
    if (this.refs <= 0) throw new Error("Storage.release called too often");
    if (--this.refs === 0 && this.pooled) this.engine.pool.release(this.buffer);
  }
}

let nextTensorId = 1;
const scopes: Set<Tensor>[] = [];

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

export class Tensor {
  readonly id = nextTensorId++;
  readonly size: number;
  requiresGrad = false;
  /** set for leaves whose gradient accumulates into `grad` (parameters, test inputs) */
  grad: Tensor | null = null;
  /** produced by a recorded op (false for leaves) */
  hasNode = false;
  name?: string;
  #disposed = false;

  constructor(
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly dtype: DType = "f32",
    track = true,
  ) {
    this.size = shapeSize(shape);
    if (this.size * DTYPE_BYTES[dtype] > storage.byteLength) {
      throw new Error(`Tensor ${shapeStr(shape)} larger than its storage`);
    }
    if (track && scopes.length) scopes[scopes.length - 1].add(this);
  }

  get engine(): Engine {
    return this.storage.engine;
  }
  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }
  get byteOffset(): number {
    return this.storage.byteOffset;
  }
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }
  get disposed(): boolean {
    return this.#disposed;
  }
  get rank(): number {
    return this.shape.length;
  }

  /** A new handle on the same storage, owned by the caller (not scope-tracked). */
  ref(): Tensor {
    this.assertAlive();
    this.storage.retain();
    const t = new Tensor(this.storage, this.shape, this.dtype, false);
    t.requiresGrad = this.requiresGrad;
    return t;
  }

  /**
   * Same storage, another shape of the same size (no gradient recording; use
   * ops.reshape inside differentiable code). Tracked by the current scope.
   */
  view(shape: readonly number[]): Tensor {
    this.assertAlive();
    const s = resolveShape(shape, this.size);
    this.storage.retain();
    return new Tensor(this.storage, s, this.dtype);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.storage.release();
    if (scopes.length) scopes[scopes.length - 1].delete(this);
  }

  assertAlive(): void {
    if (this.#disposed) {
      throw new Error(`use of disposed tensor #${this.id} ${shapeStr(this.shape)}`);
    }
  }

  toString(): string {
    return `Tensor#${this.id}${this.name ? `(${this.name})` : ""}${
      shapeStr(this.shape)
    }:${this.dtype}`;
  }
}

/** Resolves one -1 in a shape against a total size. */
export function resolveShape(shape: readonly number[], size: number): number[] {
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg >= 0) {
    const rest = shapeSize(s.filter((_, i) => i !== neg));
    s[neg] = rest === 0 ? 0 : size / rest;
  }
  if (shapeSize(s) !== size || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`cannot view ${size} elements as ${shapeStr(shape)}`);
  }
  return s;
}

type Nested = Tensor | null | undefined | number | string | boolean | Nested[] | {
  [k: string]: Nested;
};

function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v == null) return;
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) { for (const x of v) collect(x, out, depth + 1); }
  else if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as Record<string, unknown>)) collect(x, out, depth + 1);
  }
}

/**
 * Runs `fn` in a scope: tensors created inside and not reachable from the
 * result (arrays / plain objects, 4 levels deep) are disposed at the end.
 * Returned tensors move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) throw new Error("tidy() takes a synchronous function");
  const keepers = new Set<Tensor>();
  collect(result as Nested, keepers);
  for (const t of scope) {
    if (keepers.has(t)) {
      if (scopes.length) scopes[scopes.length - 1].add(t);
    } else t.dispose();
  }
  return result;
}

/** Removes tensors from scope tracking so that `tidy` will not dispose them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}
