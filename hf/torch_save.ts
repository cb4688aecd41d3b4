/**
 * Writes a float32 state_dict as `torch.save` does (what the reference's
 * `from_pretrained_hf` reads: `pytorch_model.bin`), for `based export --hf
 * DIR --bin`. The layout is PyTorch's (see hf/torch_load.ts): a zip of
 * stored entries `pytorch_model/data.pkl` (pickle protocol 2: a dict of
 * `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False,
 * OrderedDict())`, the storage a persistent id `('storage', torch.FloatStorage,
 * key, 'cpu', numel)`), `pytorch_model/data/<key>`, `pytorch_model/version`,
 * each entry's data 64-byte aligned. Tensors listed as tied to another are the
 * same pickled object (one storage), as in PyTorch's state_dict. The archive
 * is streamed to the file one entry at a time (a 1B model is over 4 GiB: ZIP64
 * records are written when an offset needs them).
 */
import { crc32 } from "./zip.ts";

export interface TensorOut {
  name: string;
  shape: readonly number[];
  data: Float32Array;
  /** the name of an earlier tensor this one is (tied) */
  tiedTo?: string;
}

class PickleWriter {
  private out: number[] = [];
  private memo = 0;
  private globals = new Map<string, number>();
  byte(...b: number[]): void {
    for (const x of b) this.out.push(x);
  }
  private u32(v: number): void {
    this.byte(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  put(): number {
    const m = this.memo++;
    if (m < 256) this.byte(0x71, m); // BINPUT
    else (this.byte(0x72), this.u32(m)); // LONG_BINPUT
    return m;
  }
  get(m: number): void {
    if (m < 256) this.byte(0x68, m); // BINGET
    else (this.byte(0x6a), this.u32(m)); // LONG_BINGET
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.byte(0x58); // BINUNICODE
    this.u32(b.length);
    this.byte(...b);
    this.put();
  }
  int(v: number): void {
    if (v < 256) this.byte(0x4b, v); // BININT1
    else if (v < 65536) this.byte(0x4d, v & 0xff, v >> 8); // BININT2
    else if (v < 2 ** 31) (this.byte(0x4a), this.u32(v)); // BININT
    else {
      // LONG1: little-endian two's complement, a zero byte keeps it positive
      const b: number[] = [];
      for (let x = BigInt(v); x > 0n; x >>= 8n) b.push(Number(x & 0xffn));
      if (b[b.length - 1] & 0x80) b.push(0);
      this.byte(0x8a, b.length, ...b);
    }
  }
  global(module: string, name: string): void {
    const k = `${module}\n${name}\n`;
    const m = this.globals.get(k);
    if (m !== undefined) return this.get(m);
    this.byte(0x63, ...new TextEncoder().encode(k)); // GLOBAL
    this.globals.set(k, this.put());
  }
  tuple(items: readonly number[]): void {
    if (items.length === 0) return this.byte(0x29); // EMPTY_TUPLE
    if (items.length <= 3) {
      for (const v of items) this.int(v);
      this.byte(0x84 + items.length); // TUPLE1..TUPLE3
    } else {
      this.byte(0x28); // MARK
      for (const v of items) this.int(v);
      this.byte(0x74); // TUPLE
    }
    this.put();
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.out);
  }
}

/** data.pkl for `tensors`; storage keys are "0", "1", ... in order of first appearance. */
export function statePickle(tensors: TensorOut[]): { pickle: Uint8Array; storages: TensorOut[] } {
  const p = new PickleWriter();
  p.byte(0x80, 2, 0x7d); // PROTO 2, EMPTY_DICT
  p.put();
  p.byte(0x28); // MARK
  const objects = new Map<string, number>();
  const storages: TensorOut[] = [];
  for (const t of tensors) {
    p.str(t.name);
    const tied = t.tiedTo === undefined ? undefined : objects.get(t.tiedTo);
    if (tied !== undefined) {
      p.get(tied);
      continue;
    }
    const key = String(storages.length);
    storages.push(t);
    const stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.byte(0x28, 0x28); // MARK MARK
    p.str("storage");
    p.global("torch", "FloatStorage");
    p.str(key);
    p.str("cpu");
    p.int(t.data.length);
    p.byte(0x74); // TUPLE
    p.put();
    p.byte(0x51); // BINPERSID
    p.int(0);
    p.tuple(t.shape);
    p.tuple(stride);
    p.byte(0x89); // NEWFALSE
    p.global("collections", "OrderedDict");
    p.byte(0x29, 0x52); // EMPTY_TUPLE REDUCE
    p.put();
    p.byte(0x74); // TUPLE
    p.put();
    p.byte(0x52); // REDUCE
    objects.set(t.name, p.put());
  }
  p.byte(0x75, 0x2e); // SETITEMS STOP
  return { pickle: p.bytes(), storages };
}

const U32_MAX = 0xffffffff;

/**
 * Streams `torch.save(state_dict)` of `tensors` into `path` (the archive
 * folder is `pytorch_model`, as Hugging Face names it). `zip64` forces the
 * ZIP64 records (tests; otherwise only when an offset needs them).
 */
export async function writeTorchFile(
  path: string,
  tensors: TensorOut[],
  opts: { zip64?: boolean } = {},
): Promise<void> {
  const { pickle, storages } = statePickle(tensors);
  const enc = new TextEncoder();
  const entries: [string, Uint8Array][] = [
    ["pytorch_model/data.pkl", pickle],
    ...storages.map((t, i): [string, Uint8Array] => [
      `pytorch_model/data/${i}`,
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    ]),
    ["pytorch_model/version", enc.encode("3\n")],
  ];
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const write = async (b: Uint8Array) => {
      let o = 0;
      while (o < b.length) o += await f.write(b.subarray(o));
    };
    let off = 0;
    const central: Uint8Array[] = [];
    for (const [name, data] of entries) {
      const nb = enc.encode(name);
      const crc = crc32(data);
      // local header, sizes in it (no data descriptor); "FB" extra pads the data to 64 bytes
      const pad = (64 - ((off + 30 + nb.length + 4) % 64)) % 64;
      const local = new Uint8Array(30 + nb.length + 4 + pad);
      const lv = new DataView(local.buffer);
      lv.setUint32(0, 0x04034b50, true);
      lv.setUint16(4, opts.zip64 || off > U32_MAX ? 45 : 20, true);
      lv.setUint16(6, 0x0800, true); // UTF-8 names
      lv.setUint32(14, crc, true);
      lv.setUint32(18, data.length, true);
      lv.setUint32(22, data.length, true);
      lv.setUint16(26, nb.length, true);
      lv.setUint16(28, 4 + pad, true);
      local.set(nb, 30);
      lv.setUint16(30 + nb.length, 0x4246, true); // "FB"
      lv.setUint16(32 + nb.length, pad, true);
      local.fill(0x5a, 34 + nb.length); // 'Z', as PyTorch pads
      const big = opts.zip64 || off > U32_MAX;
      const c = new Uint8Array(46 + nb.length + (big ? 12 : 0));
      const cv = new DataView(c.buffer);
      cv.setUint32(0, 0x02014b50, true);
      cv.setUint16(4, big ? 45 : 20, true);
      cv.setUint16(6, big ? 45 : 20, true);
      cv.setUint16(8, 0x0800, true);
      cv.setUint32(16, crc, true);
      cv.setUint32(20, data.length, true);
      cv.setUint32(24, data.length, true);
      cv.setUint16(28, nb.length, true);
      cv.setUint16(30, big ? 12 : 0, true);
      cv.setUint32(42, big ? U32_MAX : off, true);
      c.set(nb, 46);
      if (big) {
        cv.setUint16(46 + nb.length, 1, true); // ZIP64 extra: the local header offset
        cv.setUint16(48 + nb.length, 8, true);
        cv.setBigUint64(50 + nb.length, BigInt(off), true);
      }
      central.push(c);
      await write(local);
      await write(data);
      off += local.length + data.length;
    }
    const cdSize = central.reduce((a, b) => a + b.length, 0);
    for (const c of central) await write(c);
    const big = opts.zip64 || off > U32_MAX;
    if (big) {
      const rec = new Uint8Array(56 + 20);
      const rv = new DataView(rec.buffer);
      rv.setUint32(0, 0x06064b50, true); // ZIP64 end of central directory record
      rv.setBigUint64(4, 44n, true);
      rv.setUint16(12, 45, true);
      rv.setUint16(14, 45, true);
      rv.setBigUint64(24, BigInt(entries.length), true);
      rv.setBigUint64(32, BigInt(entries.length), true);
      rv.setBigUint64(40, BigInt(cdSize), true);
      rv.setBigUint64(48, BigInt(off), true);
      rv.setUint32(56, 0x07064b50, true); // its locator
      rv.setBigUint64(64, BigInt(off + cdSize), true);
      rv.setUint32(72, 1, true);
      await write(rec);
    }
    const eocd = new Uint8Array(22);
    const ev = new DataView(eocd.buffer);
    ev.setUint32(0, 0x06054b50, true);
    ev.setUint16(8, big ? 0xffff : entries.length, true);
    ev.setUint16(10, big ? 0xffff : entries.length, true);
    ev.setUint32(12, big ? U32_MAX : cdSize, true);
    ev.setUint32(16, big ? U32_MAX : off, true);
    await write(eocd);
    await f.sync();
  } finally {
    f.close();
  }
}
