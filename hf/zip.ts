/**
 * A small ZIP reader for PyTorch's checkpoint format (`torch.save` since 1.6:
 * a zip of `<name>/data.pkl`, `<name>/data/<key>` storages, `<name>/version`).
 *
 * Why our own (about 200 lines) rather than an npm zip library: released
 * checkpoints are several GB (based-1b in float32 is over 5 GB), and the npm
 * libraries either inflate the whole archive in memory (fflate, jszip) or are
 * Node stream APIs (yauzl, unzipper). PyTorch stores its entries uncompressed
 * (method 0, 64-byte aligned), so all we need is the central directory (with
 * ZIP64 for files over 4 GB) and positioned reads of one entry at a time from
 * an open file; deflated entries (other writers) are inflated with the
 * platform's DecompressionStream. Every entry's CRC-32 is verified, and
 * offsets are checked against the file size, so a truncated or corrupt file is
 * a one-line error that names it.
 */
import { BasedError } from "../errors.ts";

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate */
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  /** offset of the local file header */
  localOffset: number;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

function corrupt(source: string, what: string): never {
  throw new BasedError(
    `${source}: not a readable zip archive: ${what}`,
    "the file is truncated or corrupt; download it again",
  );
}

/** CRC-32 tables for slicing by 8 (Int32Array: V8 keeps the values as small integers). */
const CRC_TABLES: Int32Array[] = (() => {
  const t: Int32Array[] = [];
  for (let k = 0; k < 8; k++) t.push(new Int32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let j = 0; j < 8; j++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[0][i] = c;
  }
  for (let i = 0; i < 256; i++) {
    for (let k = 1; k < 8; k++) t[k][i] = t[0][t[k - 1][i] & 0xff] ^ (t[k - 1][i] >>> 8);
  }
  return t;
})();

/** CRC-32 (the zip / IEEE polynomial), slicing by 8. */
export function crc32(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES;
  let c = ~crc | 0;
  let i = 0;
  const n8 = data.length - (data.length % 8);
  for (; i < n8; i += 8) {
    const a = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c = t7[a & 0xff] ^ t6[(a >>> 8) & 0xff] ^ t5[(a >>> 16) & 0xff] ^ t4[a >>> 24] ^
      t3[data[i + 4]] ^ t2[data[i + 5]] ^ t1[data[i + 6]] ^ t0[data[i + 7]];
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

async function readAt(f: Deno.FsFile, pos: number, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  await f.seek(pos, Deno.SeekMode.Start);
  let off = 0;
  while (off < len) {
    const n = await f.read(out.subarray(off));
    if (n === null || n === 0) break;
    off += n;
  }
  return off === len ? out : out.subarray(0, off);
}

/** An open zip archive: its entries by name; `read` returns one entry's bytes. */
export class ZipArchive {
  private constructor(
    private readonly file: Deno.FsFile,
    readonly source: string,
    readonly size: number,
    readonly entries: Map<string, ZipEntry>,
  ) {}

  static async open(path: string): Promise<ZipArchive> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new BasedError(`${path}: cannot open (${(e as Error).message.split("\n")[0]})`);
    }
    try {
      const size = (await file.stat()).size;
      return new ZipArchive(file, path, size, await readDirectory(file, path, size));
    } catch (e) {
      file.close();
      throw e;
    }
  }

  close(): void {
    try {
      this.file.close();
    } catch { /* closed */ }
  }

  /** The bytes of one entry, inflated when needed, its CRC-32 checked. */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    const src = `${this.source} (${entry.name})`;
    const local = await readAt(this.file, entry.localOffset, 30);
    const lv = new DataView(local.buffer, local.byteOffset, local.byteLength);
    if (local.length < 30 || lv.getUint32(0, true) !== LOCAL) {
      corrupt(src, "no local file header where the directory points");
    }
    const start = entry.localOffset + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
    if (start + entry.compressedSize > this.size) {
      corrupt(
        src,
        `the entry ends at byte ${start + entry.compressedSize}, past the end (${this.size})`,
      );
    }
    const raw = await readAt(this.file, start, entry.compressedSize);
    if (raw.length !== entry.compressedSize) corrupt(src, "short read");
    let data: Uint8Array;
    if (entry.method === 0) data = raw;
    else if (entry.method === 8) {
      try {
        const s = new Blob([raw as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
          new DecompressionStream("deflate-raw"),
        );
        data = new Uint8Array(await new Response(s).arrayBuffer());
      } catch {
        corrupt(src, "the deflated data does not inflate");
      }
    } else corrupt(src, `compression method ${entry.method} (only stored and deflate are read)`);
    if (data.length !== entry.size) {
      corrupt(src, `${data.length} bytes, the directory says ${entry.size}`);
    }
    if (crc32(data) !== entry.crc32) corrupt(src, "CRC-32 mismatch");
    return data;
  }
}

async function readDirectory(
  f: Deno.FsFile,
  source: string,
  size: number,
): Promise<Map<string, ZipEntry>> {
  if (size < 22) corrupt(source, `only ${size} bytes`);
  // the end-of-central-directory record: the last 22 bytes plus a comment of up to 65535
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tail = await readAt(f, size - tailLen, tailLen);
  const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let at = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === EOCD && i + 22 + tv.getUint16(i + 20, true) <= tail.length) {
      at = i;
      break;
    }
  }
  if (at < 0) corrupt(source, "no end-of-central-directory record (truncated?)");
  let count = tv.getUint16(at + 10, true);
  let cdSize = tv.getUint32(at + 12, true);
  let cdOffset = tv.getUint32(at + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // ZIP64: the locator sits right before the record
    if (at < 20 || tv.getUint32(at - 20, true) !== EOCD64_LOCATOR) {
      corrupt(source, "ZIP64 sizes without a ZIP64 locator");
    }
    const recOff = Number(tv.getBigUint64(at - 20 + 8, true));
    if (recOff + 56 > size) corrupt(source, "the ZIP64 record lies past the end of the file");
    const rec = await readAt(f, recOff, 56);
    const rv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
    if (rv.getUint32(0, true) !== EOCD64) {
      corrupt(source, "no ZIP64 end-of-central-directory record");
    }
    count = Number(rv.getBigUint64(32, true));
    cdSize = Number(rv.getBigUint64(40, true));
    cdOffset = Number(rv.getBigUint64(48, true));
  }
  if (cdOffset + cdSize > size) {
    corrupt(source, `the central directory (${cdOffset} + ${cdSize}) lies past the end (${size})`);
  }
  const cd = await readAt(f, cdOffset, cdSize);
  const cv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const entries = new Map<string, ZipEntry>();
  const dec = new TextDecoder();
  let p = 0;
  for (let n = 0; n < count; n++) {
    if (p + 46 > cd.length || cv.getUint32(p, true) !== CENTRAL) {
      corrupt(source, `central directory entry ${n} is damaged`);
    }
    const nameLen = cv.getUint16(p + 28, true);
    const extraLen = cv.getUint16(p + 30, true);
    const commentLen = cv.getUint16(p + 32, true);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) {
      corrupt(source, `central directory entry ${n} is damaged`);
    }
    const e: ZipEntry = {
      name: dec.decode(cd.subarray(p + 46, p + 46 + nameLen)),
      method: cv.getUint16(p + 10, true),
      crc32: cv.getUint32(p + 16, true),
      compressedSize: cv.getUint32(p + 20, true),
      size: cv.getUint32(p + 24, true),
      localOffset: cv.getUint32(p + 42, true),
    };
    // ZIP64 extra field (0x0001): the 64-bit values of the fields that hold 0xffffffff, in order
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cv.getUint16(x, true), len = cv.getUint16(x + 2, true);
      if (id === 1) {
        let q = x + 4;
        const next = () => {
          if (q + 8 > x + 4 + len) corrupt(source, `the ZIP64 field of ${e.name} is short`);
          const v = Number(cv.getBigUint64(q, true));
          q += 8;
          return v;
        };
        if (e.size === 0xffffffff) e.size = next();
        if (e.compressedSize === 0xffffffff) e.compressedSize = next();
        if (e.localOffset === 0xffffffff) e.localOffset = next();
      }
      x += 4 + len;
    }
    if (e.localOffset + 30 > size) corrupt(source, `${e.name} starts past the end of the file`);
    entries.set(e.name, e);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}
