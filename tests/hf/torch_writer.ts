/**
 * Test helper: writes a state_dict the way `torch.save` does (zip format,
 * pickle protocol 2), byte layout taken from a real file (the hf_based_tiny
 * fixture, inspected with python3's zipfile and pickletools):
 *   - entries `<name>/data.pkl`, `<name>/data/<key>`, `<name>/version` ("3\n"), stored
 *     (method 0), data 64-byte aligned by an "FB" extra field of zeros ('Z'), sizes and
 *     CRC-32 in the central directory, flag 0x0808 (data descriptor after each entry);
 *   - data.pkl: PROTO 2, EMPTY_DICT, MARK, then per key BINUNICODE key,
 *     GLOBAL torch._utils _rebuild_tensor_v2, MARK, MARK 'storage' GLOBAL torch <T>Storage
 *     '<key>' 'cpu' numel TUPLE, BINPERSID, offset, shape, stride, NEWFALSE,
 *     GLOBAL collections OrderedDict EMPTY_TUPLE REDUCE, TUPLE, REDUCE; tensors
 *     sharing a storage (the tied lm_head.weight) are the same object (BINGET);
 *     SETITEMS, STOP.
 * Written independently of the reader (hf/) so that the tests check one against the other.
 */
import { crc32 } from "../../hf/zip.ts";

export type Storage = "FloatStorage" | "HalfStorage" | "BFloat16Storage" | "LongStorage";

export interface TorchTensor {
  storage: Storage;
  /** raw little-endian bytes of the storage */
  bytes: Uint8Array;
  shape: number[];
  /** default: row-major */
  stride?: number[];
  offset?: number;
  /** another key: this tensor is the same object (tied) */
  sameAs?: string;
}

class Pickle {
  out: number[] = [];
  memo = 0;
  globals = new Map<string, number>();
  byte(...b: number[]) {
    this.out.push(...b);
  }
  u32(v: number) {
    this.byte(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  put(): number {
    const m = this.memo++;
    if (m < 256) this.byte(0x71, m); // BINPUT
    else (this.byte(0x72), this.u32(m)); // LONG_BINPUT
    return m;
  }
  get(m: number) {
    if (m < 256) this.byte(0x68, m);
    else (this.byte(0x6a), this.u32(m));
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.byte(0x58);
    this.u32(b.length);
    this.byte(...b);
    this.put();
  }
  int(v: number) {
    if (v < 256) this.byte(0x4b, v);
    else if (v < 65536) this.byte(0x4d, v & 0xff, v >> 8);
    else (this.byte(0x4a), this.u32(v));
  }
  global(module: string, name: string) {
    const k = `${module}\n${name}\n`;
    const m = this.globals.get(k);
    if (m !== undefined) return this.get(m);
    this.byte(0x63, ...new TextEncoder().encode(k));
    this.globals.set(k, this.put());
  }
  tuple(items: number[]) {
    if (items.length === 0) return this.byte(0x29);
    if (items.length <= 3) {
      for (const v of items) this.int(v);
      this.byte(0x84 + items.length); // TUPLE1..3
    } else {
      this.byte(0x28);
      for (const v of items) this.int(v);
      this.byte(0x74);
    }
    this.put();
  }
}

/** The bytes of `torch.save(state_dict)` for these tensors (in this order). */
export function torchSave(tensors: [string, TorchTensor][], name = "archive"): Uint8Array {
  const p = new Pickle();
  p.byte(0x80, 2, 0x7d); // PROTO 2, EMPTY_DICT
  p.put();
  p.byte(0x28); // MARK
  const objects = new Map<string, number>();
  const storages: [string, Uint8Array][] = [];
  for (const [key, t] of tensors) {
    p.str(key);
    if (t.sameAs !== undefined) {
      p.get(objects.get(t.sameAs)!);
      continue;
    }
    const sk = String(storages.length);
    storages.push([sk, t.bytes]);
    const item = t.storage === "FloatStorage" ? 4 : t.storage === "LongStorage" ? 8 : 2;
    const stride = t.stride ??
      t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.byte(0x28, 0x28); // MARK MARK
    p.str("storage");
    p.global("torch", t.storage);
    p.str(sk);
    p.str("cpu");
    p.int(t.bytes.length / item);
    p.byte(0x74); // TUPLE
    p.put();
    p.byte(0x51); // BINPERSID
    p.int(t.offset ?? 0);
    p.tuple(t.shape);
    p.tuple(stride);
    p.byte(0x89); // NEWFALSE
    p.global("collections", "OrderedDict");
    p.byte(0x29, 0x52); // EMPTY_TUPLE REDUCE
    p.put();
    p.byte(0x74); // TUPLE
    p.put();
    p.byte(0x52); // REDUCE
    objects.set(key, p.put());
  }
  p.byte(0x75, 0x2e); // SETITEMS STOP
  return zipStored([
    [`${name}/data.pkl`, new Uint8Array(p.out)],
    ...storages.map(([k, b]) => [`${name}/data/${k}`, b] as [string, Uint8Array]),
    [`${name}/version`, new TextEncoder().encode("3\n")],
  ]);
}

/** A zip of stored entries laid out as PyTorch's writer does (see the module comment). */
export function zipStored(files: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let off = 0;
  const enc = new TextEncoder();
  for (const [name, data] of files) {
    const nb = enc.encode(name);
    const crc = crc32(data);
    // local header + name + FB extra so that the data starts at a multiple of 64
    let pad = (64 - ((off + 30 + nb.length + 4) % 64)) % 64;
    if (pad < 0) pad += 64;
    const local = new Uint8Array(30 + nb.length + 4 + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(6, 0x0808, true);
    lv.setUint16(26, nb.length, true);
    lv.setUint16(28, 4 + pad, true);
    local.set(nb, 30);
    lv.setUint16(30 + nb.length, 0x4246, true); // "FB"
    lv.setUint16(32 + nb.length, pad, true);
    local.fill(0x5a, 34 + nb.length); // 'Z'
    const desc = new Uint8Array(16);
    const dv = new DataView(desc.buffer);
    dv.setUint32(0, 0x08074b50, true);
    dv.setUint32(4, crc, true);
    dv.setUint32(8, data.length, true);
    dv.setUint32(12, data.length, true);
    const c = new Uint8Array(46 + nb.length);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(8, 0x0808, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nb.length, true);
    cv.setUint32(42, off, true);
    c.set(nb, 46);
    central.push(c);
    parts.push(local, data, desc);
    off += local.length + data.length + desc.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, files.length, true);
  ev.setUint16(10, files.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, off, true);
  const all = [...parts, ...central, eocd];
  const out = new Uint8Array(all.reduce((a, b) => a + b.length, 0));
  let p = 0;
  for (const a of all) (out.set(a, p), p += a.length);
  return out;
}

/** Exact value of half bits (reference decoder of the test). */
export function fromF16(h: number): number {
  const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}
