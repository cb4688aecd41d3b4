/**
 * WikiText reader: the reference token counts on the shared WikiText files,
 * the `.tokens` row rule, the parquet layout (files written by a minimal
 * parquet writer below, since hyparquet only reads), and the missing-data
 * error.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import { WIKITEXT as WT, wikitextTest } from "../helpers.ts";
import { kjvText } from "../../data/kjv.ts";
import { isBlank, textToRows } from "../../data/rows.ts";
import { encode, EOS } from "../../data/tokenize/mod.ts";
import { tokenizeRows, tokenizeTextBytes } from "../../data/tokenize/mod.ts";
import {
  findSplitFiles,
  missingSplitError,
  normalizeSplit,
  readParquetRows,
  readSplitRows,
  tokenizeSplitFiles,
} from "../../data/wikitext.ts";
import { BasedError } from "../../errors.ts";

/**
 * Shipped text in the WikiText `.tokens` shape (heading, blank and
 * whitespace-only lines, paragraphs ending in "\n"), about `bytes` long: the
 * bundled KJV corpus, for the tests that need no particular WikiText file.
 */
async function tokensText(bytes: number): Promise<string> {
  const lines = (await kjvText()).split("\n");
  let out = "";
  for (let i = 0; out.length < bytes && i < lines.length; i++) {
    if (i % 50 === 0) out += ` \n = Chapter ${i / 50} = \n \n`;
    out += ` ${lines[i]} \n`;
  }
  return out;
}

// ---------------------------------------------------------------- shared WikiText files

// GPT-2 tokens incl. one EOS per non-empty row (shared/data/wikitext/SOURCE.md, computed there
// with four independent tokenizers).
const COUNTS: [string, string, "validation" | "test", number, number][] = [
  ["", "wikitext-103-v1", "validation", 249_598, 3_760],
  ["", "wikitext-103-v1", "test", 285_191, 4_358],
  ["", "wikitext-2-v1", "validation", 258_522, 3_760],
  ["", "wikitext-2-v1", "test", 295_834, 4_358],
  ["/wikitext-raw-v1", "wikitext-103-raw-v1", "test", 286_178, 4_358],
];

for (const [sub, config, split, tokens, rows] of COUNTS) {
  wikitextTest(`wikitext: ${config} ${split} has ${tokens} GPT-2 tokens with EOS`, async () => {
    const found = await findSplitFiles(WT + sub, config, split);
    assert(found, `${config} ${split} not found under ${WT + sub}`);
    assertEquals(found.layout, "text");
    const r = await readSplitRows(found);
    assertEquals(r.length, rows);
    const t = await tokenizeSplitFiles(found, { workers: 0 });
    assertEquals(t.length, tokens);
    // every non-empty row ends its ids with EOS; EOS appears exactly once per non-empty row
    let eos = 0;
    for (const id of t) if (id === EOS) eos++;
    assertEquals(eos, r.filter((x) => x !== "").length);
  });
}

Deno.test("wikitext: worker pool gives the same tokens as the main thread, in order", async () => {
  const text = await tokensText(600_000);
  const bytes = new TextEncoder().encode(text);
  const a = await tokenizeTextBytes(bytes, { workers: 0 });
  // tiny chunks and forced workers: many chunks finish out of order
  const b = await tokenizeTextBytes(bytes, { workers: 2, workerMinBytes: 0, chunkBytes: 50_000 });
  assertEquals(b.length, a.length);
  assert(a.every((x, i) => x === b[i]));
  const rows = textToRows(text);
  const c = await tokenizeRows(rows, { workers: 2, workerMinBytes: 0, chunkBytes: 100_000 });
  assert(c.length === a.length && a.every((x, i) => x === c[i]));
});

wikitextTest(
  "wikitext: first row of WikiText-103 test is ' = Robert Boulter = \\n' + EOS",
  async () => {
    const found = (await findSplitFiles(WT, "wikitext-103-v1", "test"))!;
    const rows = await readSplitRows(found);
    assertEquals(rows[0], "");
    assertEquals(rows[1], " = Robert Boulter = \n");
    const t = await tokenizeSplitFiles(found, { workers: 0 });
    assertEquals([...t.subarray(0, 9)], [796, 5199, 347, 2852, 353, 796, 220, 198, EOS]);
  },
);

// ---------------------------------------------------------------- row rule (the HF wikitext rows)

Deno.test("wikitext: .tokens rows split after each \\n, whitespace-only lines become ''", () => {
  const text = " = T = \n \n\n \t \n a b \n\u3000\n last line no newline";
  assertEquals(textToRows(text), [" = T = \n", "", "", "", " a b \n", "", " last line no newline"]);
  // no row for the empty tail after a final "\n"
  assertEquals(textToRows("x\n"), ["x\n"]);
  assertEquals(textToRows(""), []);
  // Python text mode: "\r\n" and lone "\r" are newlines
  assertEquals(textToRows("a\r\nb\rc\n"), ["a\n", "b\n", "c\n"]);
  // Python's isspace, not JS trim: U+FEFF is not whitespace, \x1c..\x1f and \x85 are
  assert(isBlank(" \t\x1c\x1f\x85\u2028"));
  assert(!isBlank("\ufeff"));
});

Deno.test("wikitext: tokens = encode(row) + EOS for non-empty rows, nothing for empty rows", async () => {
  const text = " = A = \n \n\n B c d \n  \n";
  const t = await tokenizeTextBytes(new TextEncoder().encode(text), { workers: 0 });
  const want = [...encode(" = A = \n"), EOS, ...encode(" B c d \n"), EOS];
  assertEquals([...t], want);
  const noEos = await tokenizeTextBytes(new TextEncoder().encode(text), {
    workers: 0,
    addEos: false,
  });
  assertEquals([...noEos], [...encode(" = A = \n"), ...encode(" B c d \n")]);
});

Deno.test("wikitext: chunking never changes rows (CRLF, multi-byte characters, BOM kept)", async () => {
  const text = "\ufeffé\r\nü日本\r\n \r\nx\ry\n" + "  line é \n".repeat(50);
  const bytes = new TextEncoder().encode(text);
  const whole = await tokenizeTextBytes(bytes, { workers: 0, chunkBytes: 1 << 20 });
  for (const chunk of [1, 2, 3, 7, 13]) {
    const t = await tokenizeTextBytes(bytes, { workers: 0, chunkBytes: chunk });
    assertEquals([...t], [...whole], `chunk ${chunk}`);
  }
  // the BOM stays part of the first row, as Python's "utf-8" codec keeps it
  assertEquals([...whole.subarray(0, encode("\ufeffé\n").length)], encode("\ufeffé\n"));
});

// ---------------------------------------------------------------- layout and errors

Deno.test("wikitext: split names, release-folder layout and missing-data error", async () => {
  assertEquals(normalizeSplit("valid"), "validation");
  assertEquals(normalizeSplit("validation"), "validation");
  assertThrows(() => normalizeSplit("dev"), BasedError);
  const dir = await Deno.makeTempDir();
  try {
    // the Salesforce zip unpacks to wikitext-103/wiki.*.tokens
    await Deno.mkdir(`${dir}/wikitext-103`);
    await Deno.writeTextFile(`${dir}/wikitext-103/wiki.valid.tokens`, " \n = X = \n");
    const f = await findSplitFiles(dir, "wikitext-103-v1", "validation");
    assertEquals(f, { layout: "text", files: [`${dir}/wikitext-103/wiki.valid.tokens`] });
    assertEquals(await findSplitFiles(dir, "wikitext-103-v1", "train"), null);
    const e = missingSplitError(dir, "wikitext-103-v1", "train");
    assert(e instanceof BasedError);
    assert(!e.message.includes("\n"), "one line");
    for (
      const s of [
        "wiki.train.tokens",
        "train-0000i-of-0000n.parquet",
        `${dir}/wikitext-103-v1`,
        "Salesforce/wikitext",
        "datamodule.data_dir",
      ]
    ) {
      assert(e.message.includes(s), `message lacks ${s}: ${e.message}`);
    }
    // raw configs read wiki.*.raw
    await Deno.writeTextFile(`${dir}/wiki.test.raw`, " = R = \n");
    assertEquals((await findSplitFiles(dir, "wikitext-2-raw-v1", "test"))?.files, [
      `${dir}/wiki.test.raw`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- parquet (HF layout)

/** Thrift compact protocol writer: just what a parquet footer and page header need. */
class Thrift {
  out: number[] = [];
  #last: number[] = [0];
  byte(b: number) {
    this.out.push(b & 0xff);
  }
  varint(v: number) {
    let x = BigInt(v);
    while (x >= 0x80n) {
      this.byte(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.byte(Number(x));
  }
  zz(v: number) {
    this.varint(v >= 0 ? 2 * v : -2 * v - 1);
  }
  field(id: number, type: number) {
    const d = id - this.#last[this.#last.length - 1];
    if (d > 0 && d <= 15) this.byte((d << 4) | type);
    else {
      this.byte(type);
      this.zz(id);
    }
    this.#last[this.#last.length - 1] = id;
  }
  i32(id: number, v: number) {
    this.field(id, 5);
    this.zz(v);
  }
  i64(id: number, v: number) {
    this.field(id, 6);
    this.zz(v);
  }
  bin(id: number, b: Uint8Array | string) {
    const u = typeof b === "string" ? new TextEncoder().encode(b) : b;
    this.field(id, 8);
    this.varint(u.length);
    for (const x of u) this.byte(x);
  }
  begin() {
    this.#last.push(0);
  }
  end() {
    this.byte(0);
    this.#last.pop();
  }
  struct(id: number, body: () => void) {
    this.field(id, 12);
    this.begin();
    body();
    this.end();
  }
  list(id: number, elemType: number, n: number) {
    this.field(id, 9);
    if (n < 15) this.byte((n << 4) | elemType);
    else {
      this.byte(0xf0 | elemType);
      this.varint(n);
    }
  }
  structs<T>(id: number, items: T[], body: (x: T) => void) {
    this.list(id, 12, items.length);
    for (const x of items) {
      this.begin();
      body(x);
      this.end();
    }
  }
}

/** Snappy with literals only (a valid snappy stream; what HF files use is SNAPPY). */
function snappyLiteral(data: Uint8Array): Uint8Array {
  const o: number[] = [];
  let n = data.length;
  while (n >= 0x80) {
    o.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  o.push(n);
  for (let p = 0; p < data.length; p += 65536) {
    const len = Math.min(65536, data.length - p);
    if (len <= 60) o.push((len - 1) << 2);
    else if (len <= 256) o.push(60 << 2, len - 1);
    else o.push(61 << 2, (len - 1) & 0xff, (len - 1) >> 8);
    for (let i = 0; i < len; i++) o.push(data[p + i]);
  }
  return new Uint8Array(o);
}

/**
 * A parquet file with one OPTIONAL BYTE_ARRAY (UTF8) column `text`, one data
 * page (v1, PLAIN, RLE definition levels) per row group.
 */
function writeParquet(rowGroups: (string | null)[][], codec: 0 | 1): Uint8Array {
  const enc = new TextEncoder();
  const file: number[] = [..."PAR1"].map((c) => c.charCodeAt(0));
  const chunks: { offset: number; n: number; usize: number; csize: number }[] = [];
  for (const rows of rowGroups) {
    const body: number[] = [];
    // definition levels: 4-byte length + one bit-packed run of width 1 (header: varint)
    const groups = Math.ceil(rows.length / 8);
    const lv: number[] = [];
    for (let h = (groups << 1) | 1;; h >>>= 7) {
      if (h < 0x80) {
        lv.push(h);
        break;
      }
      lv.push((h & 0x7f) | 0x80);
    }
    for (let g = 0; g < groups; g++) {
      let b = 0;
      for (let k = 0; k < 8; k++) {
        if (rows[g * 8 + k] !== null && g * 8 + k < rows.length) b |= 1 << k;
      }
      lv.push(b);
    }
    body.push(lv.length & 0xff, (lv.length >> 8) & 0xff, 0, 0, ...lv);
    for (const r of rows) {
      if (r === null) continue;
      const u = enc.encode(r);
      body.push(
        u.length & 0xff,
        (u.length >> 8) & 0xff,
        (u.length >> 16) & 0xff,
        u.length >>> 24,
        ...u,
      );
    }
    const raw = new Uint8Array(body);
    const data = codec === 1 ? snappyLiteral(raw) : raw;
    const h = new Thrift();
    h.begin();
    h.i32(1, 0); // DATA_PAGE
    h.i32(2, raw.length);
    h.i32(3, data.length);
    h.struct(5, () => {
      h.i32(1, rows.length);
      h.i32(2, 0); // PLAIN
      h.i32(3, 3); // RLE
      h.i32(4, 3);
    });
    h.end();
    chunks.push({
      offset: file.length,
      n: rows.length,
      usize: h.out.length + raw.length,
      csize: h.out.length + data.length,
    });
    for (const x of h.out) file.push(x);
    for (const x of data) file.push(x);
  }
  const m = new Thrift();
  m.begin();
  m.i32(1, 1);
  m.structs(2, [0, 1], (i) => {
    if (i === 0) {
      m.bin(4, "schema");
      m.i32(5, 1);
    } else {
      m.i32(1, 6); // BYTE_ARRAY
      m.i32(3, 1); // OPTIONAL
      m.bin(4, "text");
      m.i32(6, 0); // UTF8
    }
  });
  m.i64(3, rowGroups.reduce((a, r) => a + r.length, 0));
  m.structs(4, chunks, (c) => {
    m.structs(1, [c], (cc) => {
      m.i64(2, cc.offset);
      m.struct(3, () => {
        m.i32(1, 6);
        m.list(2, 5, 2);
        m.zz(0);
        m.zz(3);
        m.list(3, 8, 1);
        m.varint(4);
        for (const ch of "text") m.byte(ch.charCodeAt(0));
        m.i32(4, codec);
        m.i64(5, cc.n);
        m.i64(6, cc.usize);
        m.i64(7, cc.csize);
        m.i64(9, cc.offset);
      });
    });
    m.i64(2, c.csize);
    m.i64(3, c.n);
  });
  m.end();
  const len = m.out.length;
  for (const x of m.out) file.push(x);
  file.push(len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >>> 24);
  file.push(..."PAR1".split("").map((c) => c.charCodeAt(0)));
  return new Uint8Array(file);
}

Deno.test("wikitext: parquet layout (HF shards, snappy, several row groups) reads rows in order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // HF rows: whitespace-only lines as ""
    const rows = textToRows(await tokensText(400_000));
    assert(rows.length > 2500 && rows.includes(""));
    const half = 1900;
    await Deno.mkdir(`${dir}/wikitext-103-v1`);
    // two shards, written out of name order; shard 0 has two row groups, shard 1 is uncompressed
    await Deno.writeFile(
      `${dir}/wikitext-103-v1/validation-00001-of-00002.parquet`,
      writeParquet([rows.slice(half)], 0),
    );
    await Deno.writeFile(
      `${dir}/wikitext-103-v1/validation-00000-of-00002.parquet`,
      writeParquet([rows.slice(0, 700), rows.slice(700, half)], 1),
    );
    const f = await findSplitFiles(dir, "wikitext-103-v1", normalizeSplit("valid"));
    assertEquals(f?.layout, "parquet");
    assertEquals(f?.files.map((p) => p.split("/").pop()), [
      "validation-00000-of-00002.parquet",
      "validation-00001-of-00002.parquet",
    ]);
    assertEquals(await readParquetRows(f!.files), rows);
    const ids = await tokenizeRows(rows, { workers: 0 });
    assertEquals(await tokenizeSplitFiles(f!, { workers: 0 }), ids);

    // null and whitespace-only values read as ""; files directly in data_dir are found too
    await Deno.writeFile(
      `${dir}/test-00000-of-00001.parquet`,
      writeParquet([[" = A = \n", null, " ", "b\n"]], 1),
    );
    const g = await findSplitFiles(dir, "wikitext-103-v1", "test");
    assertEquals(await readParquetRows(g!.files), [" = A = \n", "", "", "b\n"]);

    // a missing shard is an error naming it
    await Deno.writeFile(`${dir}/train-00001-of-00002.parquet`, writeParquet([["x\n"]], 0));
    const e = await findSplitFiles(dir, "wikitext-103-v1", "train").then(() => null, (x) => x);
    assert(
      e instanceof BasedError && e.message.includes("train-00000-of-00002.parquet"),
      String(e),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
