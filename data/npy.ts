/**
 * NumPy `.npy` for 1-D uint16 token arrays (the reference's cache, `process_dataset` in
 * `train/datamodules/language_modeling_hf.py`): the reference writes
 * `np.save` v1.0 files with dtype `<u2`, C order. We write the same bytes
 * `np.save` writes (v1.0, header dict padded with spaces and "\n" to a
 * multiple of 64 bytes) and read v1.0/2.0/3.0 headers; only little-endian
 * uint16, 1-D, is accepted. Reading checks the magic, the header and the exact
 * file length, so a truncated file is detected.
 */

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The header of a `.npy` v1.0 file holding n `<u2` values, shape (n,). */
export function npyHeaderU16(n: number): Uint8Array {
  const dict = `{'descr': '<u2', 'fortran_order': False, 'shape': (${n},), }`;
  // magic(6) + version(2) + header length(2) + dict + padding + "\n" ≡ 0 mod 64
  const unpadded = 10 + dict.length + 1;
  const pad = (64 - (unpadded % 64)) % 64;
  const header = dict + " ".repeat(pad) + "\n";
  const out = new Uint8Array(10 + header.length);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  return out;
}

/** The little-endian bytes of `tokens` (a view on little-endian hosts, else a swapped copy). */
export function npyBodyU16(tokens: Uint16Array): Uint8Array {
  const body = new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength);
  if (littleEndian) return body;
  const out = new Uint8Array(body.length);
  for (let o = 0; o < out.length; o += 2) {
    out[o] = body[o + 1];
    out[o + 1] = body[o];
  }
  return out;
}

/** The bytes of a `.npy` v1.0 file holding `tokens` as `<u2`, shape (N,). */
export function encodeNpyU16(tokens: Uint16Array): Uint8Array {
  const h = npyHeaderU16(tokens.length);
  const out = new Uint8Array(h.length + tokens.length * 2);
  out.set(h, 0);
  out.set(npyBodyU16(tokens), h.length);
  return out;
}

/** Why a file is not a valid 1-D `<u2` `.npy` (thrown by decodeNpyU16). */
export class NpyFormatError extends Error {
  override name = "NpyFormatError";
}

/** The tokens of a 1-D uint16 `.npy` file; throws NpyFormatError on any mismatch. */
export function decodeNpyU16(bytes: Uint8Array): Uint16Array {
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) {
    throw new NpyFormatError("not a .npy file (bad magic)");
  }
  const major = bytes[6];
  let hlen: number, hstart: number;
  if (major === 1) {
    hlen = bytes[8] | (bytes[9] << 8);
    hstart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new NpyFormatError("truncated header");
    hlen = (bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (bytes[11] << 24)) >>> 0;
    hstart = 12;
  } else {
    throw new NpyFormatError(`unsupported .npy version ${major}.${bytes[7]}`);
  }
  const dataStart = hstart + hlen;
  if (bytes.length < dataStart) throw new NpyFormatError("truncated header");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(hstart, dataStart),
  );
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shape === undefined) {
    throw new NpyFormatError(`unreadable header ${JSON.stringify(header.trim())}`);
  }
  if (descr !== "<u2" && !(descr === "=u2" && littleEndian)) {
    throw new NpyFormatError(`dtype ${descr}, expected <u2 (uint16)`);
  }
  const dims = shape.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (dims.length !== 1 || !/^\d+$/.test(dims[0])) {
    throw new NpyFormatError(`shape (${shape}), expected a 1-D array`);
  }
  const n = Number(dims[0]);
  const expected = dataStart + 2 * n;
  if (bytes.length !== expected) {
    throw new NpyFormatError(
      `${bytes.length} bytes, expected ${expected} for ${n} uint16 values (truncated or padded)`,
    );
  }
  let tokens: Uint16Array;
  if ((bytes.byteOffset + dataStart) % 2 === 0) {
    tokens = new Uint16Array(bytes.buffer, bytes.byteOffset + dataStart, n);
  } else {
    tokens = new Uint16Array(n);
    new Uint8Array(tokens.buffer).set(bytes.subarray(dataStart));
  }
  if (!littleEndian) {
    const copy = new Uint16Array(n);
    for (let i = 0; i < n; i++) copy[i] = (tokens[i] >> 8) | ((tokens[i] & 0xff) << 8);
    tokens = copy;
  }
  return tokens;
}
