/**
 * safetensors reader and writer: round trips, the real fixtures, decoding of
 * the non-native dtypes (files crafted byte by byte), and every refusal with
 * its one-line message.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { BasedError } from "../../errors.ts";
import {
  MAX_HEADER_BYTES,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  tensorData,
  type TensorToWrite,
} from "../../tensor/safetensors.ts";
import { fixtureCpuTest, FIXTURES } from "../helpers.ts";

const SRC = "crafted.safetensors";

/** The error `fn` throws (fails when it returns). */
function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected an error, none was thrown");
}

/** The BasedError `fn` throws. */
function basedError(fn: () => unknown): BasedError {
  const e = caught(fn);
  assert(e instanceof BasedError, `expected a BasedError, got ${e}`);
  return e;
}

function assertInstanceOf(v: unknown, cls: abstract new (...a: never[]) => unknown): void {
  assert(v instanceof cls, `expected a ${cls.name}, got ${v}`);
}

/** A file from a header (object or raw text) and a data buffer; `n` overrides the length prefix. */
function craft(header: unknown, data: ArrayLike<number> = [], n?: bigint): Uint8Array {
  const hb = typeof header === "string"
    ? new TextEncoder().encode(header)
    : header instanceof Uint8Array
    ? header
    : new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + hb.length + data.length);
  new DataView(out.buffer).setBigUint64(0, n ?? BigInt(hb.length), true);
  out.set(hb, 8);
  out.set(data, 8 + hb.length);
  return out;
}

/** Asserts a refusal: a BasedError, one line, naming the file and matching `what`. */
function refuses(bytes: Uint8Array, what: RegExp | string, source = SRC): BasedError {
  const e = basedError(() => parseSafetensors(bytes, source));
  const msg = e.message;
  assert(!/[\r\n]/.test(msg), `message is not one line: ${JSON.stringify(msg)}`);
  assert(msg.startsWith(`${source}: `), `message does not name the file: ${msg}`);
  if (typeof what === "string") assert(msg.includes(what), `'${what}' not in: ${msg}`);
  else assert(what.test(msg), `${what} does not match: ${msg}`);
  return e;
}

const f32 = (...v: number[]) => new Uint8Array(Float32Array.from(v).buffer);

function bytesOf(a: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// ---------------------------------------------------------------- round trips

Deno.test("safetensors: round trip F32, I32, U8, empty tensors, scalars and metadata", () => {
  const tensors: TensorToWrite[] = [
    { name: "w", shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 1e-30, -0, Infinity]) },
    { name: "ids", shape: [4], data: Int32Array.from([0, -1, 2147483647, -2147483648]) },
    { name: "empty", shape: [0], data: new Float32Array(0) },
    { name: "empty2d", shape: [3, 0, 2], data: new Int32Array(0) },
    { name: "scalar", shape: [], data: Float32Array.from([42.25]) },
    { name: "bytes", shape: [3], data: Uint8Array.from([0, 128, 255]) },
    { name: "nan", shape: [1], data: Float32Array.from([NaN]) },
  ];
  const meta = { format: "pt", note: 'ünïcode ✓ "quoted"\nnewline', empty: "" };
  const bytes = serializeSafetensors(tensors, meta);
  const f = parseSafetensors(bytes, "rt.safetensors");
  assertEquals(f.source, "rt.safetensors");
  assertEquals(f.metadata, meta);
  assertEquals([...f.tensors.keys()], tensors.map((t) => t.name));
  const dtypes = { w: "F32", ids: "I32", empty: "F32", empty2d: "I32", scalar: "F32" } as const;
  for (const [name, dtype] of Object.entries(dtypes)) {
    assertEquals(f.tensors.get(name)!.dtype, dtype);
  }
  assertEquals(f.tensors.get("bytes")!.dtype, "U8");
  for (const t of tensors) {
    assertEquals(f.tensors.get(t.name)!.shape, [...t.shape]);
    const got = tensorData(f, t.name);
    if (t.data instanceof Uint8Array) assertEquals([...got], [...t.data]);
    else assertEquals(bytesOf(got), bytesOf(t.data), `${t.name}: bit-exact`);
  }
  assertInstanceOf(tensorData(f, "w"), Float32Array);
  assertInstanceOf(tensorData(f, "ids"), Int32Array);
  assertEquals(tensorData(f, "empty").length, 0);
  assertEquals(tensorData(f, "empty2d").length, 0);
  assertEquals([...tensorData(f, "scalar")], [42.25]);
  // writing again gives the same bytes
  assertEquals(serializeSafetensors(tensors, meta), bytes);
});

Deno.test("safetensors: header is padded with spaces so the data starts on 8 bytes", () => {
  for (let len = 0; len < 12; len++) {
    const name = "x".repeat(len);
    const bytes = serializeSafetensors([{ name, shape: [1], data: Float32Array.from([len]) }]);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assertEquals(n % 8, 0, `header length ${n}`);
    assertEquals(bytes.length, 8 + n + 4);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert(/^\{.*\} *$/.test(text), text);
    assertEquals([...tensorData(parseSafetensors(bytes), name)], [len]);
  }
  // no tensors, no metadata: "{}" padded to 8
  const empty = serializeSafetensors([]);
  assertEquals(empty.length, 16);
  const f = parseSafetensors(empty);
  assertEquals(f.tensors.size, 0);
  assertEquals(f.metadata, {});
  assertEquals(f.data.length, 0);
});

Deno.test("safetensors: names that are Object.prototype keys or need escaping round trip", () => {
  const names = [
    "toString",
    "constructor",
    "__proto__",
    "hasOwnProperty",
    "a\nb",
    'q"uote',
    "",
    "é",
  ];
  const tensors = names.map((name, i) => ({ name, shape: [1], data: Float32Array.from([i]) }));
  const meta = { ["__proto__"]: "p", toString: "s", constructor: "c" };
  const f = parseSafetensors(serializeSafetensors(tensors, meta));
  assertEquals([...f.tensors.keys()].sort(), [...names].sort());
  names.forEach((name, i) => assertEquals([...tensorData(f, name)], [i], name));
  assertEquals(Object.keys(f.metadata).sort(), ["__proto__", "constructor", "toString"]);
  assertEquals(f.metadata.toString, "s");
});

Deno.test("safetensors: the writer refuses reserved, duplicate and mis-shaped tensors", () => {
  const one = Float32Array.from([1]);
  const t = (name: string, shape = [1]) => ({ name, shape, data: one });
  const msg = (fn: () => unknown) => (caught(fn) as Error).message;
  assert(msg(() => serializeSafetensors([t("__metadata__")])).includes("reserved"));
  assert(msg(() => serializeSafetensors([t("a"), t("a")])).includes("duplicate name 'a'"));
  assert(msg(() => serializeSafetensors([t("a", [2])])).includes("shape and data disagree"));
});

Deno.test("safetensors: parse works on a view with a byte offset (no alignment assumption)", () => {
  const file = serializeSafetensors([
    { name: "a", shape: [3], data: Float32Array.from([1, 2, 3]) },
    { name: "b", shape: [2], data: Int32Array.from([7, -7]) },
  ]);
  const big = new Uint8Array(file.length + 3);
  big.set(file, 3);
  const f = parseSafetensors(big.subarray(3));
  assertEquals([...tensorData(f, "a")], [1, 2, 3]);
  assertEquals([...tensorData(f, "b")], [7, -7]);
  // a hand-made file whose tensors start on odd offsets
  const g = parseSafetensors(craft({
    a: { dtype: "U8", shape: [1], data_offsets: [0, 1] },
    b: { dtype: "F32", shape: [2], data_offsets: [1, 9] },
  }, [9, ...f32(1.5, -2.5)]));
  assertEquals([...tensorData(g, "a")], [9]);
  assertEquals([...tensorData(g, "b")], [1.5, -2.5]);
});

// ------------------------------------------------------------------ fixtures

interface ManifestTensor {
  file: string;
  shape: number[];
  dtype: string;
  max_abs?: number;
}

fixtureCpuTest("safetensors: reads every shared fixture as the manifest describes it", async () => {
  const manifest = JSON.parse(await Deno.readTextFile(`${FIXTURES}/manifest.json`)) as {
    files: Record<string, { tensors: number; bytes: number }>;
    tensors: Record<string, ManifestTensor>;
  };
  const files = [...Deno.readDirSync(FIXTURES)].map((e) => e.name).filter((n) =>
    n.endsWith(".safetensors")
  ).sort();
  assertEquals(files, Object.keys(manifest.files).sort());
  let checked = 0;
  for (const file of files) {
    const path = `${FIXTURES}/${file}`;
    const f = await readSafetensors(path);
    assertEquals(f.source, path);
    assertEquals(f.tensors.size, manifest.files[file].tensors, file);
    assertEquals(8 + (f.data.byteOffset - 8) + f.data.length, manifest.files[file].bytes, file);
    for (const [name, info] of f.tensors) {
      const m = manifest.tensors[name];
      assert(m, `${file}: '${name}' not in the manifest`);
      assertEquals(m.file, file);
      assertEquals(info.shape, m.shape, name);
      assertEquals(info.dtype, m.dtype === "float32" ? "F32" : m.dtype === "int32" ? "I32" : "?");
      const d = tensorData(f, name);
      assertInstanceOf(d, info.dtype === "F32" ? Float32Array : Int32Array);
      assertEquals(d.length, info.shape.reduce((a, b) => a * b, 1));
      if (m.max_abs !== undefined && info.dtype === "F32") {
        let mx = 0;
        for (const v of d) mx = Math.max(mx, Math.abs(v));
        // manifest statistics are printed from the float32 data; allow float32 rounding
        assert(Math.abs(mx - m.max_abs) <= 1e-6 * Math.max(1, m.max_abs), `${name}: max_abs`);
      }
      checked++;
    }
    // re-serialising the decoded tensors gives the same tensors back, bit for bit
    const again = parseSafetensors(serializeSafetensors(
      [...f.tensors].map(([name, t]) => ({ name, shape: t.shape, data: tensorData(f, name) })),
      f.metadata,
    ));
    for (const name of f.tensors.keys()) {
      assertEquals(bytesOf(tensorData(again, name)), bytesOf(tensorData(f, name)), name);
    }
  }
  assertEquals(checked, Object.keys(manifest.tensors).length);
  const fwd = await readSafetensors(`${FIXTURES}/model_forward.safetensors`);
  assertEquals(fwd.tensors.get("tokens")!.dtype, "I32");
  assertEquals(fwd.tensors.get("loss")!.shape, [1]);
});

Deno.test("safetensors: a missing file is a BasedError naming it", async () => {
  const path = `${await Deno.makeTempDir()}/nope.safetensors`;
  const e = await readSafetensors(path).catch((e) => e);
  assertInstanceOf(e, BasedError);
  assertEquals(e.message, `${path}: file not found`);
});

// ----------------------------------------------------------- other dtypes

function u16s(...v: number[]): number[] {
  return [...new Uint8Array(Uint16Array.from(v).buffer)];
}

Deno.test("safetensors: F16 decoding (normals, subnormals, signed zero, inf, nan)", () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x0000, 0],
    [0x8000, -0],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  const raw = u16s(...cases.map((c) => c[0]), 0x7e00, 0xfc01);
  const f = parseSafetensors(
    craft({ h: { dtype: "F16", shape: [2, 7], data_offsets: [0, 28] } }, raw),
  );
  const d = tensorData(f, "h");
  assertInstanceOf(d, Float32Array);
  assertEquals(d.length, 14);
  cases.forEach(([h, v], i) => assert(Object.is(d[i], v), `0x${h.toString(16)}: ${d[i]} != ${v}`));
  assert(Number.isNaN(d[12]) && Number.isNaN(d[13]), "NaNs");
});

Deno.test("safetensors: BF16 decoding is the top half of the float32 bits", () => {
  const cases: [number, number][] = [
    [0x3f80, 1],
    [0xc040, -3],
    [0x3e80, 0.25],
    [0x4049, 3.140625],
    [0x7f7f, 3.3895313892515355e38], // largest finite
    [0x0080, 2 ** -126], // smallest normal
    [0x0001, 2 ** -133], // subnormal
    [0x8000, -0],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
  ];
  const raw = u16s(...cases.map((c) => c[0]), 0x7fc0);
  const f = parseSafetensors(
    craft({ b: { dtype: "BF16", shape: [11], data_offsets: [0, 22] } }, raw),
  );
  const d = tensorData(f, "b");
  assertInstanceOf(d, Float32Array);
  cases.forEach(([h, v], i) => assert(Object.is(d[i], v), `0x${h.toString(16)}: ${d[i]} != ${v}`));
  assert(Number.isNaN(d[10]));
});

Deno.test("safetensors: F64 decoding rounds to float32", () => {
  const vals = [1.5, -2.25, 0.1, 1e300, -1e-300, -0, NaN];
  const raw = [...new Uint8Array(Float64Array.from(vals).buffer)];
  const f = parseSafetensors(
    craft({ d: { dtype: "F64", shape: [7], data_offsets: [0, 56] } }, raw),
  );
  const d = tensorData(f, "d");
  assertInstanceOf(d, Float32Array);
  assertEquals([...d.subarray(0, 6)], [1.5, -2.25, Math.fround(0.1), Infinity, -0, -0]);
  assert(Object.is(d[5], -0) && Number.isNaN(d[6]));
});

Deno.test("safetensors: I64 decoding, and refusal of values outside int32", () => {
  const vals = [0n, -1n, 2147483647n, -2147483648n, 50257n];
  const raw = [...new Uint8Array(BigInt64Array.from(vals).buffer)];
  const f = parseSafetensors(
    craft({ i: { dtype: "I64", shape: [5], data_offsets: [0, 40] } }, raw),
  );
  const d = tensorData(f, "i");
  assertInstanceOf(d, Int32Array);
  assertEquals([...d], [0, -1, 2147483647, -2147483648, 50257]);
  for (const bad of [2147483648n, -2147483649n, 1n << 62n]) {
    const g = parseSafetensors(
      craft({ i: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, [
        ...new Uint8Array(BigInt64Array.from([7n, bad]).buffer),
      ]),
      SRC,
    );
    const e = basedError(() => tensorData(g, "i"));
    assertEquals(
      e.message,
      `${SRC}: tensor 'i' (I64) holds ${bad} at index 1, outside the int32 range`,
    );
  }
});

Deno.test("safetensors: small integer dtypes and BOOL decode to Int32Array", () => {
  const data = [
    ...new Uint8Array(Int16Array.from([-32768, 32767]).buffer),
    ...new Uint8Array(Int8Array.from([-128, 127]).buffer),
    ...u16s(0, 65535),
    ...new Uint8Array(Uint32Array.from([7, 0xffffffff]).buffer),
    1,
    0,
  ];
  const f = parseSafetensors(
    craft({
      i16: { dtype: "I16", shape: [2], data_offsets: [0, 4] },
      i8: { dtype: "I8", shape: [2], data_offsets: [4, 6] },
      u16: { dtype: "U16", shape: [2], data_offsets: [6, 10] },
      u32: { dtype: "U32", shape: [2], data_offsets: [10, 18] },
      bool: { dtype: "BOOL", shape: [2], data_offsets: [18, 20] },
    }, data),
    SRC,
  );
  assertEquals([...tensorData(f, "i16")], [-32768, 32767]);
  assertEquals([...tensorData(f, "i8")], [-128, 127]);
  assertEquals([...tensorData(f, "u16")], [0, 65535]);
  // U32 keeps its bits: values over 2^31 read back through a Uint32Array view
  const u32 = tensorData(f, "u32");
  assertEquals([...new Uint32Array(u32.buffer, u32.byteOffset, u32.length)], [7, 0xffffffff]);
  assertEquals([...tensorData(f, "bool")], [1, 0]);
  for (const name of ["i16", "i8", "u16", "u32", "bool"]) {
    assertInstanceOf(tensorData(f, name), Int32Array);
  }
  const e = basedError(() => tensorData(f, "missing"));
  assertEquals(e.message, `${SRC}: no tensor named 'missing'`);
});

// ------------------------------------------------------------------ refusals

const T = (over: Record<string, unknown> = {}) => ({
  dtype: "F32",
  shape: [2],
  data_offsets: [0, 8],
  ...over,
});

Deno.test("safetensors: refuses files shorter than 8 bytes", () => {
  for (let n = 0; n < 8; n++) refuses(new Uint8Array(n), `only ${n} bytes`);
});

Deno.test("safetensors: refuses a header length beyond the end of the file", () => {
  refuses(craft("{}", [], 100n), "header length 100 beyond the end of the file (10 bytes)");
  refuses(craft("{}", [], 3n), "header length 3 beyond the end of the file (10 bytes)");
  refuses(new Uint8Array(8).fill(0).map((_, i) => (i === 0 ? 1 : 0)), "beyond the end");
});

Deno.test("safetensors: refuses a header length over the 100 MB bound", () => {
  for (const n of [BigInt(MAX_HEADER_BYTES) + 1n, 1n << 53n, (1n << 64n) - 1n]) {
    refuses(craft("{}", [], n), `header length ${n} over ${MAX_HEADER_BYTES}`);
  }
});

Deno.test("safetensors: refuses headers that are not UTF-8, not JSON or not an object", () => {
  refuses(craft(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d])), "header is not UTF-8 JSON");
  refuses(craft(Uint8Array.from([0x7b, 0x22, 0xc3, 0x22, 0x7d])), "header is not UTF-8 JSON");
  for (const text of ["", "{", "{abc}", '{"a":1,}', "{'a':1}", "{}garbage", '{"a\n":1}']) {
    refuses(craft(text), "header is not UTF-8 JSON");
  }
  for (const text of ["[]", "null", "42", '"str"', "true", "[{}]"]) {
    refuses(craft(text), "header is not a JSON object");
  }
});

Deno.test("safetensors: refuses entries that are not objects and unknown dtypes", () => {
  const data = new Uint8Array(8);
  for (const v of [null, 3, "F32", [1]]) {
    refuses(craft({ t: v }, data), "entry 't' is not an object");
  }
  for (const dt of ["F8", "f32", "FLOAT", "", 4, null, "toString", "constructor", "__proto__"]) {
    refuses(
      craft({ t: T({ dtype: dt }) }, data),
      `tensor 't' has unknown dtype ${JSON.stringify(dt)}`,
    );
  }
  refuses(craft({ t: { shape: [2], data_offsets: [0, 8] } }, data), "unknown dtype undefined");
});

Deno.test("safetensors: refuses bad shapes (negative, non-integer, not an array, too many dims)", () => {
  const data = new Uint8Array(8);
  const bad = [[-2], [2.5], ["2"], [null], [[2]], [1e300], [2 ** 53], "2", 2, null, { 0: 2 }];
  for (const s of bad) {
    refuses(craft({ t: T({ shape: s }) }, data), `tensor 't' has a bad shape ${JSON.stringify(s)}`);
  }
  refuses(craft({ t: T({ shape: undefined }) }, data), "tensor 't' has a bad shape undefined");
  refuses(craft({ t: T({ shape: new Array(17).fill(1) }) }, data), "has a bad shape");
  // sixteen dimensions are fine
  const ok = parseSafetensors(craft({ t: T({ shape: [...new Array(15).fill(1), 2] }) }, data));
  assertEquals(ok.tensors.get("t")!.shape.length, 16);
});

Deno.test("safetensors: refuses bad data_offsets, offsets outside the data and begin > end", () => {
  const data = new Uint8Array(8);
  for (const o of [[0], [0, 8, 8], [-1, 7], [0.5, 8], ["0", "8"], null, "0,8", [0, 2 ** 53]]) {
    refuses(
      craft({ t: T({ data_offsets: o }) }, data),
      `tensor 't' has bad data_offsets ${JSON.stringify(o)}`,
    );
  }
  refuses(
    craft({ t: T({ data_offsets: [4, 12] }) }, data),
    "tensor 't' bytes [4, 12) lie outside the data (8 bytes)",
  );
  refuses(
    craft({ t: T({ data_offsets: [0, 8] }) }, data.subarray(0, 7)),
    "tensor 't' bytes [0, 8) lie outside the data (7 bytes)",
  );
  refuses(
    craft({ t: T({ shape: [0], data_offsets: [9, 9] }) }, data),
    "tensor 't' bytes [9, 9) lie outside the data (8 bytes)",
  );
  refuses(
    craft({ t: T({ data_offsets: [8, 0] }) }, data),
    "tensor 't' has data_offsets [8, 0]: begin > end",
  );
});

Deno.test("safetensors: refuses a shape that does not match the byte count", () => {
  const data = new Uint8Array(16);
  refuses(craft({ t: T({ shape: [3] }) }, data), "tensor 't' shape [3] needs 12 bytes, has 8");
  refuses(craft({ t: T({ shape: [] }) }, data), "tensor 't' shape [] needs 4 bytes, has 8");
  refuses(craft({ t: T({ shape: [2, 0] }) }, data), "shape [2,0] needs 0 bytes, has 8");
  refuses(
    craft({ t: T({ dtype: "F16", shape: [2], data_offsets: [0, 8] }) }, data),
    "needs 4 bytes, has 8",
  );
  refuses(
    craft({ t: T({ shape: [2 ** 26, 2 ** 26, 2 ** 26] }) }, data),
    "needs 1.2089258196146292e+24 bytes, has 8",
  );
});

Deno.test("safetensors: refuses overlapping tensors (empty ones overlap nothing)", () => {
  const data = new Uint8Array(16);
  refuses(
    craft({ a: T({ data_offsets: [0, 8] }), b: T({ data_offsets: [4, 12] }) }, data),
    "tensors 'a' and 'b' overlap",
  );
  refuses(
    craft({ a: T({ data_offsets: [8, 16] }), b: T({ data_offsets: [8, 16] }) }, data),
    "overlap",
  );
  refuses(
    craft({ a: T({ shape: [4], data_offsets: [0, 16] }), b: T({ data_offsets: [4, 12] }) }, data),
    "tensors 'a' and 'b' overlap",
  );
  // adjacent, and an empty tensor inside another one, are fine
  const f = parseSafetensors(craft({
    a: T({ data_offsets: [0, 8] }),
    b: T({ data_offsets: [8, 16] }),
    e: T({ shape: [0], data_offsets: [4, 4] }),
  }, data));
  assertEquals(f.tensors.size, 3);
});

Deno.test("safetensors: refuses non-object metadata and non-string metadata values", () => {
  for (const m of [null, "x", 1, ["a"]]) {
    refuses(craft({ __metadata__: m }), "__metadata__ is not an object");
  }
  for (const v of [1, null, true, {}, ["a"]]) {
    refuses(craft({ __metadata__: { ok: "s", step: v } }), '__metadata__["step"] is not a string');
  }
});

Deno.test("safetensors: refusal messages stay one short line for hostile names and values", () => {
  const data = new Uint8Array(8);
  const nl = refuses(
    craft({ "a\nb\r": T({ dtype: "X" }) }, data),
    "tensor 'a\\nb\\r' has unknown dtype",
  );
  assert(nl.message.length < 300, nl.message);
  const long = refuses(
    craft({ ["n".repeat(100000)]: T({ shape: "s".repeat(100000) }) }, data),
    "...",
  );
  assert(long.message.length < 400, `${long.message.length} chars`);
  const deep = "[".repeat(100000) + "]".repeat(100000);
  const d = refuses(
    craft(`{"t":{"dtype":"F32","shape":${deep},"data_offsets":[0,8]}}`, data),
    "bad shape",
  );
  assert(d.message.length < 400, `${d.message.length} chars`);
  // nested too deeply for JSON.stringify's recursive path (a lone surrogate key takes it):
  // still a BasedError (a RangeError escaped before)
  const deepObj = `{"\\ud800":${"[".repeat(50000)}${"]".repeat(50000)}}`;
  const o = refuses(
    craft(`{"t":{"dtype":${deepObj}}}`, data),
    "tensor 't' has unknown dtype {...}",
  );
  assert(o.message.length < 300, `${o.message.length} chars`);
  refuses(craft({ __metadata__: { "k\n": 1 } }), '__metadata__["k\\n"] is not a string');
  refuses(craft('{"a":1}', [], 6n), "header is not UTF-8 JSON");
});

Deno.test("safetensors: every refusal carries the hint and the source given", () => {
  const e = refuses(new Uint8Array(3), "only 3 bytes", "/some/dir/model.safetensors");
  assertEquals(
    e.message,
    "/some/dir/model.safetensors: not a valid safetensors file: only 3 bytes " +
      "(the file is truncated or corrupt; use another checkpoint or regenerate it)",
  );
  // the default source
  const d = basedError(() => parseSafetensors(new Uint8Array(0)));
  assert(d.message.startsWith("safetensors: not a valid safetensors file"), d.message);
});
