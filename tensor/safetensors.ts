/**
 * safetensors reader and writer (the Hugging Face format): 8-byte LE header
 * length N, N bytes of JSON, then the data buffer. The reader validates the
 * header strictly (bounded length, known dtypes, offsets inside the data,
 * no overlaps, byte counts that match the shapes) and reports problems as one
 * BasedError line that names the file.
 */
import { BasedError } from "../errors.ts";

export type SafeDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "U16"
  | "U32"
  | "BOOL";

export const SAFE_DTYPE_BYTES: Record<SafeDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  BOOL: 1,
};

/** Largest header we accept (the format's own readers use 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafeTensorInfo {
  dtype: SafeDType;
  shape: number[];
  /** byte range inside the data buffer */
  begin: number;
  end: number;
}

export interface SafeFile {
  tensors: Map<string, SafeTensorInfo>;
  metadata: Record<string, string>;
  /** the data buffer (after the header) */
  data: Uint8Array;
  source: string;
}

/**
 * A header value for an error message: JSON-quoted (so control characters
 * cannot break the one-line message) and cut to a readable length.
 */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = Array.isArray(v) ? "[...]" : "{...}"; // nested too deeply for JSON.stringify
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** A tensor name for an error message: inside '', escaped like show(). */
function showName(name: string): string {
  return `'${show(name).slice(1, -1)}'`;
}

function fail(source: string, what: string): never {
  throw new BasedError(
    `${source}: not a valid safetensors file: ${what}`,
    "the file is truncated or corrupt; use another checkpoint or regenerate it",
  );
}

/** Parses and validates a safetensors byte array. */
export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): SafeFile {
  if (bytes.length < 8) fail(source, `only ${bytes.length} bytes`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) fail(source, `header length ${n64} over ${MAX_HEADER_BYTES}`);
  const n = Number(n64);
  if (8 + n > bytes.length) {
    fail(source, `header length ${n} beyond the end of the file (${bytes.length} bytes)`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    // the parser's message quotes the header: keep control characters out of it
    const why = (e as Error).message.replace(/[\p{Cc}\u2028\u2029]/gu, "?");
    fail(
      source,
      `header is not UTF-8 JSON (${why.length > 120 ? `${why.slice(0, 117)}...` : why})`,
    );
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    fail(source, "header is not a JSON object");
  }
  const data = bytes.subarray(8 + n);
  const tensors = new Map<string, SafeTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        fail(source, "__metadata__ is not an object");
      }
      metadata = {};
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") fail(source, `__metadata__[${show(k)}] is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const nm = showName(name);
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      fail(source, `entry ${nm} is not an object`);
    }
    const r = raw as Record<string, unknown>;
    const dtype = r.dtype;
    // Object.hasOwn: `in` would accept "toString", "constructor", ...
    if (typeof dtype !== "string" || !Object.hasOwn(SAFE_DTYPE_BYTES, dtype)) {
      fail(source, `tensor ${nm} has unknown dtype ${show(dtype)}`);
    }
    const shape = r.shape;
    if (
      !Array.isArray(shape) || shape.length > 16 ||
      !shape.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      fail(source, `tensor ${nm} has a bad shape ${show(shape)}`);
    }
    const off = r.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 ||
      !off.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      fail(source, `tensor ${nm} has bad data_offsets ${show(off)}`);
    }
    const [begin, end] = off as number[];
    if (begin > end) fail(source, `tensor ${nm} has data_offsets [${begin}, ${end}]: begin > end`);
    if (end > data.length) {
      fail(
        source,
        `tensor ${nm} bytes [${begin}, ${end}) lie outside the data (${data.length} bytes)`,
      );
    }
    let count = 1;
    for (const d of shape as number[]) count *= d;
    const want = count * SAFE_DTYPE_BYTES[dtype as SafeDType];
    if (want !== end - begin) {
      fail(
        source,
        `tensor ${nm} shape ${show(shape)} needs ${want} bytes, has ${end - begin}`,
      );
    }
    tensors.set(name, { dtype: dtype as SafeDType, shape: shape as number[], begin, end });
  }
  const ranges = [...tensors.entries()].filter(([, t]) => t.end > t.begin).sort((a, b) =>
    a[1].begin - b[1].begin
  );
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i][1].begin < ranges[i - 1][1].end) {
      fail(source, `tensors ${showName(ranges[i - 1][0])} and ${showName(ranges[i][0])} overlap`);
    }
  }
  return { tensors, metadata, data, source };
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** A tensor's values: F32/F16/BF16/F64 as Float32Array, integer types as Int32Array. */
export function tensorData(f: SafeFile, name: string): Float32Array | Int32Array {
  const t = f.tensors.get(name);
  if (!t) throw new BasedError(`${f.source}: no tensor named '${name}'`);
  const bytes = f.data.slice(t.begin, t.end); // copy: alignment-safe
  const dv = new DataView(bytes.buffer);
  const count = (t.end - t.begin) / SAFE_DTYPE_BYTES[t.dtype];
  switch (t.dtype) {
    case "F32":
      return new Float32Array(bytes.buffer);
    case "F64":
      return Float32Array.from(new Float64Array(bytes.buffer));
    case "F16":
      return Float32Array.from({ length: count }, (_, i) => f16ToF32(dv.getUint16(2 * i, true)));
    case "BF16":
      return new Float32Array(
        Uint32Array.from({ length: count }, (_, i) => dv.getUint16(2 * i, true) << 16).buffer,
      );
    case "I32":
      return new Int32Array(bytes.buffer);
    case "I64": {
      // refuse values an Int32Array cannot hold instead of wrapping them silently
      const v64 = new BigInt64Array(bytes.buffer);
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        if (v64[i] < -2147483648n || v64[i] > 2147483647n) {
          const what = `holds ${v64[i]} at index ${i}, outside the int32 range`;
          throw new BasedError(`${f.source}: tensor ${showName(name)} (I64) ${what}`);
        }
        out[i] = Number(v64[i]);
      }
      return out;
    }
    case "I16":
      return Int32Array.from(new Int16Array(bytes.buffer));
    case "I8":
      return Int32Array.from(new Int8Array(bytes.buffer));
    case "U8":
    case "BOOL":
      return Int32Array.from(bytes);
    case "U16":
      return Int32Array.from(new Uint16Array(bytes.buffer));
    case "U32":
      return Int32Array.from(new Uint32Array(bytes.buffer));
  }
}

export async function readSafetensors(path: string): Promise<SafeFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new BasedError(`${path}: file not found`);
    throw e;
  }
  return parseSafetensors(bytes, path);
}

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array | Int32Array | Uint8Array;
  dtype?: SafeDType;
}

/** Serialises tensors (in the given order) with optional string metadata. */
export function serializeSafetensors(
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array {
  // no prototype: names such as "toString" or "constructor" are ordinary keys
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const dtype: SafeDType = t.dtype ??
      (t.data instanceof Float32Array ? "F32" : t.data instanceof Int32Array ? "I32" : "U8");
    const len = t.data.byteLength;
    let count = 1;
    for (const d of t.shape) count *= d;
    if (count * SAFE_DTYPE_BYTES[dtype] !== len) {
      throw new Error(`serializeSafetensors: '${t.name}' shape and data disagree`);
    }
    if (t.name === "__metadata__") {
      throw new Error(`serializeSafetensors: '__metadata__' is reserved, not a tensor name`);
    }
    if (t.name in header) throw new Error(`serializeSafetensors: duplicate name '${t.name}'`);
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [off, off + len] };
    off += len;
  }
  let json = JSON.stringify(header);
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  const pad = (8 - (hb.length % 8)) % 8;
  if (pad) {
    json += " ".repeat(pad);
    hb = enc.encode(json);
  }
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    p += t.data.byteLength;
  }
  return out;
}
