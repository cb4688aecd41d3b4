/**
 * Reads a `torch.save`d state_dict (`pytorch_model.bin`, PyTorch's zip
 * format) without PyTorch: `<name>/data.pkl` is unpickled with the safe
 * reader of hf/unpickle.ts, allowing only what a state_dict needs
 * (collections.OrderedDict, torch._utils._rebuild_tensor_v2 /
 * _rebuild_parameter, and the torch.*Storage types named by persistent ids),
 * and each tensor's storage `<name>/data/<key>` is read from the zip when the
 * tensor is asked for. Tensors that share a storage (the tied lm_head.weight)
 * read it once. Floating tensors come back as float32 (float16 and bfloat16
 * are converted exactly).
 */
import { BasedError } from "../errors.ts";
import { PyGlobal, PyTuple, unpickle } from "./unpickle.ts";
import type { ZipArchive, ZipEntry } from "./zip.ts";

export type TorchDType =
  | "F32"
  | "F16"
  | "BF16"
  | "F64"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "BOOL";

const STORAGES: Record<string, [TorchDType, number]> = {
  FloatStorage: ["F32", 4],
  HalfStorage: ["F16", 2],
  BFloat16Storage: ["BF16", 2],
  DoubleStorage: ["F64", 8],
  LongStorage: ["I64", 8],
  IntStorage: ["I32", 4],
  ShortStorage: ["I16", 2],
  CharStorage: ["I8", 1],
  ByteStorage: ["U8", 1],
  BoolStorage: ["BOOL", 1],
};

const REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2";
const REBUILD_PARAMETER = "torch._utils._rebuild_parameter";
const ORDERED_DICT = "collections.OrderedDict";

/** The globals a state_dict pickle may name; everything else is refused. */
export const ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  ORDERED_DICT,
  REBUILD_TENSOR,
  REBUILD_PARAMETER,
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
]);

interface StorageRef {
  key: string;
  dtype: TorchDType;
  itemBytes: number;
  numel: number;
}

/** One tensor of the state_dict: where its values are (not read yet). */
export interface TorchTensorRef {
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

function intList(v: unknown): number[] | null {
  const items = v instanceof PyTuple ? v.items : null;
  if (!items || !items.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) return null;
  return items as number[];
}

/** The state_dict of a torch.save zip: tensor references by key, and the file's dtypes. */
export class TorchStateDict {
  private readonly cache = new Map<string, Uint8Array>();
  /** tensors not read yet per storage key: a storage's bytes are dropped after its last tensor */
  private readonly pending = new Map<string, number>();
  private constructor(
    readonly zip: ZipArchive,
    private readonly prefix: string,
    readonly tensors: Map<string, TorchTensorRef>,
  ) {}

  static async read(zip: ZipArchive): Promise<TorchStateDict> {
    const src = zip.source;
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) {
      throw new BasedError(
        `${src}: not a torch.save file (${pkls.length} <name>/data.pkl entries, expected 1)`,
        "the legacy (pre-1.6) torch format is not read: re-save it with torch.save or as safetensors",
      );
    }
    const prefix = pkls[0].slice(0, -"data.pkl".length);
    const order = zip.entries.get(`${prefix}byteorder`);
    if (order) {
      const o = new TextDecoder().decode(await zip.read(order)).trim();
      if (o !== "little") {
        throw new BasedError(`${src}: byteorder '${o}' (only little-endian is read)`);
      }
    }
    const pkl = await zip.read(zip.entries.get(pkls[0])!);
    const where = `${src} (${pkls[0]})`;
    const bad = (what: string): never => {
      throw new BasedError(`${where}: ${what}`, "the file is not a state_dict saved by torch.save");
    };
    const root = unpickle(pkl, {
      allowed: ALLOWED_GLOBALS,
      persistentLoad(pid) {
        // ('storage', torch.<Type>Storage, key, location, numel)
        const t = pid instanceof PyTuple ? pid.items : [];
        const [tag, type, key, , numel] = t;
        if (
          t.length !== 5 || tag !== "storage" || !(type instanceof PyGlobal) ||
          typeof key !== "string" || !Number.isSafeInteger(numel) || (numel as number) < 0
        ) {
          return bad("a persistent id that is not a storage reference");
        }
        const st = STORAGES[(type as PyGlobal).name];
        if (!st || (type as PyGlobal).module !== "torch") {
          return bad(`persistent id of type ${(type as PyGlobal).qualified}`);
        }
        return { key, dtype: st[0], itemBytes: st[1], numel: numel as number } satisfies StorageRef;
      },
      call(fn, args) {
        switch (fn.qualified) {
          case ORDERED_DICT:
            if (args.length) bad("OrderedDict called with arguments");
            return new Map();
          case REBUILD_PARAMETER:
            return args[0];
          case REBUILD_TENSOR: {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            const [storage, offset] = args;
            const shape = intList(args[2]), stride = intList(args[3]);
            if (
              args.length < 6 || typeof storage !== "object" || storage === null ||
              !("key" in storage) || !Number.isSafeInteger(offset) || !shape || !stride ||
              shape.length !== stride.length
            ) {
              return bad("_rebuild_tensor_v2 with arguments that are not a tensor's");
            }
            return { storage, offset, shape, stride } as TorchTensorRef;
          }
        }
        return bad(`${fn.qualified} called (it is only a storage type)`);
      },
    }, where);
    if (!(root instanceof Map)) bad("the pickle is not a dict");
    const tensors = new Map<string, TorchTensorRef>();
    for (const [k, v] of root as Map<unknown, unknown>) {
      if (typeof k !== "string") bad("a key that is not a string");
      if (typeof v !== "object" || v === null || !("storage" in v)) {
        bad(`'${k}' is not a tensor (a training checkpoint rather than a state_dict?)`);
      }
      tensors.set(k as string, v as TorchTensorRef);
    }
    const sd = new TorchStateDict(zip, prefix, tensors);
    for (const t of tensors.values()) {
      sd.pending.set(t.storage.key, (sd.pending.get(t.storage.key) ?? 0) + 1);
    }
    return sd;
  }

  /** The dtypes of the named tensors (for the one line that says what was found). */
  dtypes(names: Iterable<string>): Set<TorchDType> {
    const s = new Set<TorchDType>();
    for (const n of names) {
      const t = this.tensors.get(n);
      if (t) s.add(t.storage.dtype);
    }
    return s;
  }

  private async storageBytes(s: StorageRef): Promise<Uint8Array> {
    const hit = this.cache.get(s.key);
    if (hit) return hit;
    const name = `${this.prefix}data/${s.key}`;
    const entry: ZipEntry | undefined = this.zip.entries.get(name);
    if (!entry) {
      throw new BasedError(
        `${this.zip.source}: storage ${name} is missing`,
        "the file is truncated or corrupt",
      );
    }
    const bytes = await this.zip.read(entry);
    if (bytes.length < s.numel * s.itemBytes) {
      throw new BasedError(
        `${this.zip.source}: storage ${name} holds ${bytes.length} bytes, ${
          s.numel * s.itemBytes
        } expected`,
        "the file is truncated or corrupt",
      );
    }
    this.cache.set(s.key, bytes);
    return bytes;
  }

  /** Drops the cached storage bytes (call after the last `float32`). */
  release(): void {
    this.cache.clear();
  }

  /** A floating tensor's values as float32, in row-major order of its shape. */
  async float32(name: string): Promise<Float32Array> {
    const t = this.tensors.get(name);
    if (!t) throw new BasedError(`${this.zip.source}: no tensor '${name}'`);
    const s = t.storage;
    if (!["F32", "F16", "BF16", "F64"].includes(s.dtype)) {
      throw new BasedError(
        `${this.zip.source}: tensor '${name}' is ${s.dtype}, not floating point`,
      );
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    let last = t.offset;
    for (let d = 0; d < t.shape.length; d++) last += (t.shape[d] - 1) * t.stride[d];
    if (numel > s.numel || (numel > 0 && last >= s.numel)) {
      throw new BasedError(`${this.zip.source}: tensor '${name}' reaches past its storage`);
    }
    const bytes = await this.storageBytes(s);
    const left = (this.pending.get(s.key) ?? 1) - 1;
    this.pending.set(s.key, left);
    if (left <= 0) this.cache.delete(s.key); // `bytes` stays alive until this call returns
    let contiguous = true;
    for (let d = t.shape.length - 1, expect = 1; d >= 0; expect *= t.shape[d], d--) {
      if (t.shape[d] !== 1 && t.stride[d] !== expect) contiguous = false;
    }
    if (contiguous) {
      const raw = bytes.slice(t.offset * s.itemBytes, (t.offset + numel) * s.itemBytes); // aligned copy
      if (s.dtype === "F32") return new Float32Array(raw.buffer);
      if (s.dtype === "F64") return Float32Array.from(new Float64Array(raw.buffer));
      const h = new Uint16Array(raw.buffer);
      if (s.dtype === "BF16") {
        const w = new Uint32Array(numel);
        for (let i = 0; i < numel; i++) w[i] = h[i] << 16;
        return new Float32Array(w.buffer);
      }
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = f16(h[i]);
      return out;
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const read = s.dtype === "F32"
      ? (i: number) => dv.getFloat32(4 * i, true)
      : s.dtype === "F64"
      ? (i: number) => dv.getFloat64(8 * i, true)
      : s.dtype === "BF16"
      ? (i: number) => bf16(dv.getUint16(2 * i, true))
      : (i: number) => f16(dv.getUint16(2 * i, true));
    const out = new Float32Array(numel);
    // row-major walk of the shape through the strides (contiguous tensors: stride[d] = prod(shape[d+1:]))
    const idx = new Array(t.shape.length).fill(0);
    let src = t.offset;
    for (let i = 0; i < numel; i++) {
      out[i] = read(src);
      for (let d = t.shape.length - 1; d >= 0; d--) {
        idx[d]++;
        src += t.stride[d];
        if (idx[d] < t.shape[d]) break;
        src -= t.stride[d] * t.shape[d];
        idx[d] = 0;
      }
    }
    return out;
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

function bf16(h: number): number {
  u32buf[0] = h << 16;
  return f32buf[0];
}

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
