/**
 * Seeded property test of the safetensors reader: random and mutated files
 * (bit flips, truncations, length prefixes, header JSON from a small grammar
 * with huge numbers, deep nesting and duplicate keys) go through
 * parseSafetensors and tensorData. Properties:
 *   - the only thing that may escape is a BasedError with a one-line message
 *     naming the file (never a TypeError / RangeError, never a hang);
 *   - an accepted file satisfies the format's invariants (known dtypes, sane
 *     shapes, every tensor inside the data with the right byte count, no two
 *     tensors overlap), agrees with an independent parse of its header, and
 *     survives a write/read round trip.
 * Every case has its own seed (BASE_SEED + index): a failure names it.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { BasedError } from "../../errors.ts";
import {
  MAX_HEADER_BYTES,
  parseSafetensors,
  SAFE_DTYPE_BYTES,
  type SafeDType,
  type SafeFile,
  serializeSafetensors,
  tensorData,
} from "../../tensor/safetensors.ts";
import { Rng } from "../helpers.ts";

const BASE_SEED = 0x5afe7e45;
const CASES = 12000;
const SRC = "fuzz.safetensors";
const enc = new TextEncoder();

const DTYPES = Object.keys(SAFE_DTYPE_BYTES) as SafeDType[];
const BOGUS_DTYPES = ["F8", "f32", "", "FLOAT", "toString", "__proto__", "constructor", "I128"];
const NAMES = [
  "w",
  "b",
  "layers.0.mixer.weight",
  "",
  "__metadata__",
  "toString",
  "__proto__",
  "constructor",
  "x\ny",
  "é✓",
  "\u0000",
  'q"t',
];
/** Number literals as text: huge, negative, fractional, beyond 2^53, overflowing to Infinity. */
const NUMBERS = [
  "0",
  "1",
  "2",
  "3",
  "4",
  "8",
  "-1",
  "-0",
  "0.5",
  "1.0",
  "1e3",
  "2147483648",
  "4294967296",
  "9007199254740991",
  "9007199254740992",
  "9007199254740993",
  "18446744073709551615",
  "1e308",
  "1e400",
  "-1e400",
  "1e-400",
  "100000000",
];

const pick = <T>(r: Rng, a: readonly T[]): T => a[r.int(a.length)];
const chance = (r: Rng, p: number) => r.next() < p;

function randomBytes(r: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

function withPrefix(header: Uint8Array, data: Uint8Array, n = BigInt(header.length)): Uint8Array {
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, n, true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

// ---------------------------------------------------------------- the grammar

function deepNest(r: Rng): string {
  const depth = chance(r, 0.1) ? 20000 + r.int(20000) : 1 + r.int(300);
  const [o, c] = chance(r, 0.5) ? ["[", "]"] : ['{"a":', "}"];
  const close = chance(r, 0.9) ? c.repeat(depth) : c.repeat(r.int(depth)); // sometimes unbalanced
  return o.repeat(depth) + (o === "[" ? "" : "1") + close;
}

function jsonString(r: Rng): string {
  return pick(r, [
    () => JSON.stringify(pick(r, NAMES)),
    () => JSON.stringify(pick(r, BOGUS_DTYPES)),
    () => JSON.stringify(pick(r, DTYPES)),
    () => '"\\ud800"', // lone surrogate escape: valid JSON, odd string
    () => JSON.stringify("s".repeat(r.int(200))),
  ])();
}

function randomJson(r: Rng, depth = 0): string {
  const k = depth > 3 ? r.int(4) : r.int(7);
  switch (k) {
    case 0:
      return pick(r, NUMBERS);
    case 1:
      return jsonString(r);
    case 2:
      return pick(r, ["true", "false", "null"]);
    case 3:
      return chance(r, 0.05) ? deepNest(r) : pick(r, NUMBERS);
    case 4:
    case 5: {
      const n = r.int(4);
      return `[${Array.from({ length: n }, () => randomJson(r, depth + 1)).join(",")}]`;
    }
    default: {
      const n = r.int(4);
      const kv = Array.from({ length: n }, () => `${jsonString(r)}:${randomJson(r, depth + 1)}`);
      return `{${kv.join(",")}}`;
    }
  }
}

interface Layout {
  cursor: number;
}

function shapeText(r: Rng): { text: string; count: number | null } {
  if (chance(r, 0.75)) {
    const dims = Array.from({ length: r.int(4) }, () => (chance(r, 0.1) ? 0 : 1 + r.int(4)));
    return { text: `[${dims.join(",")}]`, count: dims.reduce((a, b) => a * b, 1) };
  }
  const weird = pick(r, [
    () => `[${pick(r, NUMBERS)}]`,
    () => `[${pick(r, NUMBERS)},${pick(r, NUMBERS)},${pick(r, NUMBERS)}]`,
    () => `[${new Array(17 + r.int(4)).fill(1).join(",")}]`,
    () => `[${new Array(16).fill(9007199254740991).join(",")}]`,
    () => `[${new Array(15).fill(1000000000000000).join(",")},0]`,
    () => randomJson(r),
    () => deepNest(r),
    () => `"2"`,
  ])();
  return { text: weird, count: null };
}

function offsetsText(r: Rng, bytes: number | null, lay: Layout): string {
  if (bytes !== null && chance(r, 0.7)) {
    if (chance(r, 0.1)) lay.cursor = Math.max(0, lay.cursor - 1 - r.int(8)); // overlap
    if (chance(r, 0.1)) lay.cursor += r.int(5); // gap
    const b = lay.cursor;
    lay.cursor += bytes;
    return chance(r, 0.05) ? `[${b + bytes},${b}]` : `[${b},${b + bytes}]`;
  }
  return pick(r, [
    () => `[${pick(r, NUMBERS)},${pick(r, NUMBERS)}]`,
    () => `[${r.int(40)},${r.int(40)}]`,
    () => `[${r.int(10)}]`,
    () => `[0,4,8]`,
    () => randomJson(r),
  ])();
}

function tensorText(r: Rng, lay: Layout): string {
  const dtype = chance(r, 0.85) ? pick(r, DTYPES) : null;
  const shape = shapeText(r);
  const bytes = dtype !== null && shape.count !== null
    ? shape.count * SAFE_DTYPE_BYTES[dtype]
    : null;
  const fields = [
    `"dtype":${
      dtype !== null ? JSON.stringify(dtype) : chance(r, 0.5) ? jsonString(r) : randomJson(r)
    }`,
    `"shape":${shape.text}`,
    `"data_offsets":${offsetsText(r, bytes, lay)}`,
  ];
  if (chance(r, 0.1)) fields.splice(r.int(3), 1); // a missing field
  if (chance(r, 0.1)) fields.push(`"extra":${randomJson(r)}`);
  if (chance(r, 0.1)) fields.push(pick(r, fields)); // a duplicate key (JSON.parse keeps the last)
  if (chance(r, 0.2)) fields.reverse();
  return `{${fields.join(",")}}`;
}

function metadataText(r: Rng): string {
  if (chance(r, 0.2)) return randomJson(r);
  const n = r.int(4);
  const kv = Array.from({ length: n }, () => {
    const v = chance(r, 0.8) ? JSON.stringify(pick(r, NAMES)) : randomJson(r);
    return `${JSON.stringify(pick(r, NAMES))}:${v}`;
  });
  return `{${kv.join(",")}}`;
}

/** A header from the grammar plus a data buffer sized to its (plausible) layout. */
function grammarFile(r: Rng): Uint8Array {
  const lay: Layout = { cursor: 0 };
  const entries: string[] = [];
  const n = r.int(6);
  for (let i = 0; i < n; i++) {
    const key = chance(r, 0.7) ? JSON.stringify(`t${r.int(8)}`) : JSON.stringify(pick(r, NAMES));
    entries.push(`${key}:${chance(r, 0.85) ? tensorText(r, lay) : randomJson(r)}`);
  }
  if (chance(r, 0.3)) {
    entries.splice(r.int(entries.length + 1), 0, `"__metadata__":${metadataText(r)}`);
  }
  if (entries.length && chance(r, 0.1)) entries.push(pick(r, entries)); // duplicate entry
  const ws = chance(r, 0.3) ? " ".repeat(r.int(9)) : "";
  const top = chance(r, 0.03) ? randomJson(r) : `{${entries.join(`,${ws}`)}}${ws}`;
  const header = enc.encode(top);
  const dataLen = Math.max(0, lay.cursor + (chance(r, 0.8) ? r.int(4) : -1 - r.int(4)));
  return withPrefix(header, randomBytes(r, dataLen));
}

/** A valid file written by serializeSafetensors. */
function validFile(r: Rng): Uint8Array {
  const names = new Set<string>();
  const tensors = [];
  for (let i = r.int(5); i > 0; i--) {
    const name = chance(r, 0.8) ? `t${r.int(100)}` : pick(r, NAMES);
    if (names.has(name) || name === "__metadata__") continue;
    names.add(name);
    const dtype = pick(r, DTYPES);
    const shape = Array.from({ length: r.int(4) }, () => r.int(4));
    const count = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, dtype, data: randomBytes(r, count * SAFE_DTYPE_BYTES[dtype]) });
  }
  const meta = chance(r, 0.5) ? { format: "pt", [pick(r, NAMES)]: pick(r, NAMES) } : undefined;
  return serializeSafetensors(tensors, meta);
}

// -------------------------------------------------------------- the mutations

const SPLICES = [
  '"',
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  "-1",
  "1e400",
  "9007199254740993",
  "null",
  "0.5",
  '"\\ud800"',
  '"dtype":"toString"',
  '"a":1,"a":2',
];

function mutate(r: Rng, b: Uint8Array): Uint8Array {
  const n = b.length >= 8 ? Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true)) : 0;
  const headerEnd = Math.min(b.length, 8 + n);
  switch (r.int(6)) {
    case 0: { // bit flips, mostly in the header
      const out = b.slice();
      for (let k = 1 + r.int(4); k > 0 && out.length; k--) {
        const i = chance(r, 0.8) && headerEnd > 0 ? r.int(headerEnd) : r.int(out.length);
        out[i] ^= 1 << r.int(8);
      }
      return out;
    }
    case 1: // truncation
      return b.slice(0, r.int(b.length + 1));
    case 2: { // extension
      const out = new Uint8Array(b.length + 1 + r.int(16));
      out.set(b);
      out.set(randomBytes(r, out.length - b.length), b.length);
      return out;
    }
    case 3: { // another length prefix
      const out = b.length >= 8 ? b.slice() : new Uint8Array(8);
      const choices = [
        BigInt(n + 1 + r.int(8)),
        BigInt(Math.max(0, n - 1 - r.int(8))),
        BigInt(MAX_HEADER_BYTES),
        BigInt(MAX_HEADER_BYTES) + 1n,
        (1n << 64n) - 1n,
        1n << 53n,
        0n,
        BigInt(r.int(1 << 30)),
      ];
      new DataView(out.buffer).setBigUint64(0, pick(r, choices), true);
      return out;
    }
    case 4: { // splice a token into the header text (keeping the length prefix right)
      if (headerEnd <= 8) return b;
      const text = b.subarray(8, headerEnd);
      const at = r.int(text.length + 1);
      const cut = Math.min(text.length - at, r.int(4));
      const tok = chance(r, 0.9) ? enc.encode(pick(r, SPLICES)) : Uint8Array.of(0xff);
      const header = new Uint8Array(text.length - cut + tok.length);
      header.set(text.subarray(0, at));
      header.set(tok, at);
      header.set(text.subarray(at + cut), at + tok.length);
      return withPrefix(header, b.subarray(headerEnd));
    }
    default: // random bytes after a plausible prefix
      return withPrefix(randomBytes(r, r.int(48)), randomBytes(r, r.int(16)));
  }
}

// --------------------------------------------------------------- the checks

interface Tally {
  accepted: number;
  rejected: number;
  tensorsDecoded: number;
  messages: Map<string, number>;
}

function checkError(e: unknown, where: string): BasedError {
  if (!(e instanceof BasedError)) {
    throw new Error(`${where}: ${(e as Error)?.name ?? typeof e} escaped: ${e}`, { cause: e });
  }
  assert(
    !/[\r\n\u2028\u2029]/.test(e.message),
    `${where}: not one line: ${JSON.stringify(e.message)}`,
  );
  assert(e.message.startsWith(`${SRC}: `), `${where}: does not name the file: ${e.message}`);
  assert(e.message.length < 600, `${where}: ${e.message.length}-character message`);
  return e;
}

/** The problem part of a refusal ("tensor 'x' has a bad shape [...]" -> "has a bad shape"). */
function kindOf(msg: string): string {
  const what = msg.replace(/^.*?not a valid safetensors file: /, "").replace(/ \(the file.*$/, "");
  return what.replace(/'.*?'|".*?"|\[.*?[\])]|\d+(\.\d+)?(e[+-]?\d+)?/g, "_").slice(0, 48);
}

function checkAccepted(f: SafeFile, bytes: Uint8Array, where: string, tally: Tally): void {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  assert(n <= MAX_HEADER_BYTES, where);
  assertEquals(f.data.length, bytes.length - 8 - n, `${where}: data is what follows the header`);
  assertEquals(f.data.byteOffset, bytes.byteOffset + 8 + n, where);
  // an independent reading of the header agrees on the tensor names
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const names = Object.keys(header).filter((k) => k !== "__metadata__").sort();
  assertEquals([...f.tensors.keys()].sort(), names, `${where}: tensor names`);
  for (const v of Object.values(f.metadata)) assertEquals(typeof v, "string", where);
  const ranges: [number, number][] = [];
  for (const [name, t] of f.tensors) {
    const w = `${where} tensor ${JSON.stringify(name)}`;
    assert(Object.hasOwn(SAFE_DTYPE_BYTES, t.dtype), `${w}: dtype ${t.dtype}`);
    assert(t.shape.length <= 16 && t.shape.every((d) => Number.isSafeInteger(d) && d >= 0), w);
    assert(Number.isSafeInteger(t.begin) && Number.isSafeInteger(t.end), w);
    assert(0 <= t.begin && t.begin <= t.end && t.end <= f.data.length, `${w}: inside the data`);
    const count = t.shape.reduce((a, b) => a * b, 1);
    // === (not deepStrictEqual): JSON "-0" is a valid zero dimension or offset
    assert(count * SAFE_DTYPE_BYTES[t.dtype] === t.end - t.begin, `${w}: byte count`);
    if (t.end > t.begin) ranges.push([t.begin, t.end]);
    let d: Float32Array | Int32Array;
    try {
      d = tensorData(f, name);
    } catch (e) {
      checkError(e, w);
      assertEquals(t.dtype, "I64", `${w}: only I64 values outside int32 may be refused`);
      continue;
    }
    tally.tensorsDecoded++;
    assertEquals(d.length, count, `${w}: decoded length`);
    const float = ["F64", "F32", "F16", "BF16"].includes(t.dtype);
    assert(float ? d instanceof Float32Array : d instanceof Int32Array, `${w}: array type`);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) {
    assert(ranges[i][0] >= ranges[i - 1][1], `${where}: overlapping tensors`);
  }
  // write the raw bytes back out and read them again: the same tensors
  const again = parseSafetensors(
    serializeSafetensors(
      [...f.tensors].map(([name, t]) => ({
        name,
        shape: t.shape,
        dtype: t.dtype,
        data: f.data.subarray(t.begin, t.end),
      })),
      f.metadata,
    ),
    SRC,
  );
  assertEquals(again.metadata, f.metadata, `${where}: metadata round trip`);
  for (const [name, t] of f.tensors) {
    const u = again.tensors.get(name)!;
    const zero = (a: number[]) => a.map((d) => d + 0); // -0 is written back as 0
    assertEquals([u.dtype, u.shape], [t.dtype, zero(t.shape)], `${where}: round trip`);
    assertEquals(again.data.subarray(u.begin, u.end), f.data.subarray(t.begin, t.end), where);
  }
}

function runCase(bytes: Uint8Array, where: string, tally: Tally): void {
  let f: SafeFile;
  try {
    f = parseSafetensors(bytes, SRC);
  } catch (e) {
    const k = kindOf(checkError(e, where).message);
    tally.messages.set(k, (tally.messages.get(k) ?? 0) + 1);
    tally.rejected++;
    return;
  }
  tally.accepted++;
  checkAccepted(f, bytes, where, tally);
}

Deno.test("safetensors fuzz: only BasedError escapes, accepted files keep the invariants", () => {
  const tally: Tally = { accepted: 0, rejected: 0, tensorsDecoded: 0, messages: new Map() };
  const kinds = ["grammar", "valid+mutation", "grammar+mutation", "valid", "random"] as const;
  const perKind = new Map<string, number>();
  const t0 = performance.now();
  let slowest = 0, slowestCase = "";
  for (let i = 0; i < CASES; i++) {
    const seed = BASE_SEED + i;
    const r = new Rng(seed);
    const kind = kinds[i % kinds.length];
    let bytes: Uint8Array;
    switch (kind) {
      case "grammar":
        bytes = grammarFile(r);
        break;
      case "valid+mutation":
        bytes = mutate(r, validFile(r));
        for (let k = r.int(3); k > 0; k--) bytes = mutate(r, bytes);
        break;
      case "grammar+mutation":
        bytes = mutate(r, grammarFile(r));
        break;
      case "valid":
        bytes = validFile(r);
        break;
      default: // random bytes, half of them behind a length prefix that fits
        bytes = randomBytes(r, r.int(64));
        if (bytes.length >= 8 && chance(r, 0.5)) {
          new DataView(bytes.buffer).setBigUint64(0, BigInt(r.int(bytes.length - 7)), true);
        }
    }
    const where = `case ${i} (seed ${seed}, ${kind}, ${bytes.length} bytes)`;
    const c0 = performance.now();
    runCase(bytes, where, tally);
    const dt = performance.now() - c0;
    if (dt > slowest) [slowest, slowestCase] = [dt, where];
    perKind.set(kind, (perKind.get(kind) ?? 0) + 1);
  }
  const total = performance.now() - t0;
  const top = [...tally.messages].sort((a, b) => b[1] - a[1]).slice(0, 12);
  console.log(
    `${CASES} cases in ${total.toFixed(0)} ms (slowest ${
      slowest.toFixed(1)
    } ms: ${slowestCase}); ` +
      `accepted ${tally.accepted}, rejected ${tally.rejected}, ` +
      `${tally.tensorsDecoded} tensors decoded\n  refusals: ${
        top.map(([k, c]) => `${c}x ${k}`).join("\n            ")
      }`,
  );
  // both sides are exercised: many files pass, many are refused for many reasons
  assert(tally.accepted > CASES / 10, `only ${tally.accepted} accepted`);
  assert(tally.rejected > CASES / 3, `only ${tally.rejected} rejected`);
  const seen = [...tally.messages.keys()].join("\n");
  for (
    const what of [
      "only _ bytes",
      "beyond the end of the file",
      "header length _ over",
      "not UTF-_ JSON",
      "header is not a JSON object",
      "is not an object",
      "unknown dtype",
      "bad shape",
      "bad data_offsets",
      "begin > end",
      "lie outside the data",
      "needs _ bytes",
      "overlap",
      "is not a string",
    ]
  ) assert(seen.includes(what), `no case was refused with '${what}':\n${seen}`);
  assert(tally.tensorsDecoded > CASES / 5, `only ${tally.tensorsDecoded} tensors decoded`);
  // no case may hang: generous bounds (llvmpipe CI machines are slow), still far from a hang
  assert(slowest < 1000, `${slowestCase} took ${slowest.toFixed(0)} ms`);
  assert(total < 10000, `${CASES} cases took ${total.toFixed(0)} ms`);
});

Deno.test("safetensors fuzz: every prefix and every single-bit flip of a small valid file", () => {
  const file = serializeSafetensors([
    { name: "w", shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) },
    { name: "ids", shape: [3], data: Int32Array.from([1, 2, 3]) },
    { name: "h", shape: [1], dtype: "F16", data: Uint8Array.from([0, 0x3c]) },
    { name: "l", shape: [1], dtype: "I64", data: new Uint8Array(8).fill(0x7f) },
  ], { format: "pt" });
  const tally: Tally = { accepted: 0, rejected: 0, tensorsDecoded: 0, messages: new Map() };
  for (let len = 0; len <= file.length; len++) {
    runCase(file.slice(0, len), `prefix of ${len} bytes`, tally);
  }
  // only the full file (and the prefixes that drop nothing a tensor needs) are accepted
  assertEquals(tally.accepted, 1);
  for (let bit = 0; bit < file.length * 8; bit++) {
    const b = file.slice();
    b[bit >> 3] ^= 1 << (bit & 7);
    runCase(b, `bit ${bit} flipped`, tally);
  }
  assert(tally.rejected > file.length, `${tally.rejected} rejected`);
});
