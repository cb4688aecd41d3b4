/**
 * Token cache: the .npy format (byte-identical to np.save), build / reuse /
 * rebuild when the source or tokenizer changes / corrupt files, atomic writes.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import {
  cacheDirName,
  type CacheMeta,
  loadOrBuildSplit,
  pyNumber,
  type SplitCacheOptions,
} from "../../data/cache.ts";
import { decodeNpyU16, encodeNpyU16, NpyFormatError } from "../../data/npy.ts";
import { tokenizeTextBytes } from "../../data/tokenize/mod.ts";
import { BasedError } from "../../errors.ts";

Deno.test("cache: .npy bytes equal NumPy's np.save of a <u2 1-D array", () => {
  // np.save(f, np.array([1, 2, 3, 50256, 65535], dtype='<u2')) with NumPy 2.4: 138 bytes
  const dict = "{'descr': '<u2', 'fortran_order': False, 'shape': (5,), }";
  const header = dict + " ".repeat(117 - dict.length) + "\n";
  const want = [0x93, ..."NUMPY"].map((c) => typeof c === "string" ? c.charCodeAt(0) : c);
  want.push(1, 0, 118, 0, ...[...header].map((c) => c.charCodeAt(0)));
  want.push(1, 0, 2, 0, 3, 0, 0x50, 0xc4, 0xff, 0xff);
  const got = encodeNpyU16(Uint16Array.from([1, 2, 3, 50256, 65535]));
  assertEquals(got.length, 138);
  assertEquals([...got], want);
  assertEquals([...decodeNpyU16(got)], [1, 2, 3, 50256, 65535]);
  // empty array and a large one round-trip; header length keeps data 64-byte aligned
  assertEquals(decodeNpyU16(encodeNpyU16(new Uint16Array(0))).length, 0);
  const big = Uint16Array.from({ length: 123_457 }, (_, i) => (i * 31) & 0xffff);
  const enc = encodeNpyU16(big);
  assertEquals((enc.length - big.length * 2) % 64, 0);
  assertEquals([...decodeNpyU16(enc)], [...big]);
});

Deno.test("cache: .npy reader rejects truncated, padded and wrong-dtype files", () => {
  const good = encodeNpyU16(Uint16Array.from([5, 6, 7]));
  assertThrows(() => decodeNpyU16(good.subarray(0, good.length - 1)), NpyFormatError);
  assertThrows(() => decodeNpyU16(good.subarray(0, 40)), NpyFormatError);
  const padded = new Uint8Array(good.length + 2);
  padded.set(good);
  assertThrows(() => decodeNpyU16(padded), NpyFormatError);
  assertThrows(() => decodeNpyU16(new TextEncoder().encode("not numpy at all")), NpyFormatError);
  const i4 = good.slice();
  i4.set(new TextEncoder().encode("'<i4'"), 10 + "{'descr': ".length);
  assertThrows(() => decodeNpyU16(i4), /dtype '?<i4/);
  const twoD = String.fromCharCode(...good).replace("(3,)", "(1,3)");
  assertThrows(() => decodeNpyU16(Uint8Array.from(twoD, (c) => c.charCodeAt(0))), /1-D/);
});

Deno.test("cache: directory name as the reference spells it", () => {
  assertEquals(
    cacheDirName(),
    "tokenizer_name-gpt2-val_ratio-0.0005-val_split_seed-2357-add_eos-True-detokenize-False",
  );
  assertEquals(cacheDirName({ addEos: false }).endsWith("add_eos-False-detokenize-False"), true);
  assertEquals(pyNumber(0.0005), "0.0005");
  assertEquals(pyNumber(1e-5), "1e-05");
  assertEquals(pyNumber(2357), "2357");
  assertEquals(pyNumber(0.25), "0.25");
});

interface Harness {
  dir: string;
  cacheDir: string;
  src: string;
  builds: number;
  logs: string[];
  opts(extra?: Partial<SplitCacheOptions>): SplitCacheOptions;
}

async function harness(fn: (h: Harness) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  const h: Harness = {
    dir,
    cacheDir: `${dir}/cache/${cacheDirName()}`,
    src: `${dir}/wiki.test.tokens`,
    builds: 0,
    logs: [],
    opts(extra = {}) {
      return {
        dir: this.cacheDir,
        split: "test",
        addEos: true,
        recipe: "wikitext-rows/1",
        sources: [{ path: this.src }],
        missing: () => new BasedError("test split not found"),
        build: async (s) => {
          this.builds++;
          return await tokenizeTextBytes(await Deno.readFile(s[0].path), { workers: 0 });
        },
        log: (s) => this.logs.push(s),
        ...extra,
      };
    },
  };
  try {
    await Deno.writeTextFile(h.src, " = A = \n \n The cat sat . \n");
    await fn(h);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function noTempFiles(dir: string) {
  for await (const e of Deno.readDir(dir)) assert(!e.name.endsWith(".tmp"), `leftover ${e.name}`);
}

Deno.test("cache: build, then reuse without tokenising, sidecar describes the source", async () => {
  await harness(async (h) => {
    const a = await loadOrBuildSplit(h.opts());
    assertEquals(a.origin, "built");
    assertEquals(h.builds, 1);
    const b = await loadOrBuildSplit(h.opts());
    assertEquals(b.origin, "cache");
    assertEquals(h.builds, 1);
    assertEquals([...b.tokens], [...a.tokens]);
    const meta = JSON.parse(await Deno.readTextFile(`${h.cacheDir}/test.meta.json`)) as CacheMeta;
    assertEquals(meta.num_tokens, a.tokens.length);
    assertEquals(meta.add_eos, true);
    assertEquals(meta.sources[0].path, h.src);
    assertEquals(meta.sources[0].size, (await Deno.stat(h.src)).size);
    assertEquals(meta.sources[0].sha256.length, 64);
    await noTempFiles(h.cacheDir);
    // a touched source with the same bytes (e.g. a copy) is still a hit
    const later = new Date(Date.now() + 60_000);
    await Deno.utime(h.src, later, later);
    assertEquals((await loadOrBuildSplit(h.opts())).origin, "cache");
    assertEquals(h.builds, 1);
  });
});

Deno.test("cache: rebuilt when the source, tokenizer, add_eos or recipe changes", async () => {
  await harness(async (h) => {
    const a = await loadOrBuildSplit(h.opts());
    // same size, different bytes, newer mtime
    await Deno.writeTextFile(h.src, " = B = \n \n The dog sat . \n");
    const t = new Date(Date.now() + 120_000);
    await Deno.utime(h.src, t, t);
    const b = await loadOrBuildSplit(h.opts());
    assertEquals(b.origin, "built");
    assert(
      h.logs.some((l) => l.includes("stale") && l.includes("content changed")),
      h.logs.join("\n"),
    );
    assert(a.tokens.some((x, i) => x !== b.tokens[i]));
    // a different tokenizer id in the sidecar
    const metaPath = `${h.cacheDir}/test.meta.json`;
    const meta = JSON.parse(await Deno.readTextFile(metaPath));
    await Deno.writeTextFile(metaPath, JSON.stringify({ ...meta, tokenizer: "some-other-bpe" }));
    assertEquals((await loadOrBuildSplit(h.opts())).origin, "built");
    assert(h.logs.some((l) => l.includes("tokenizer some-other-bpe")));
    assertEquals((await loadOrBuildSplit(h.opts({ recipe: "wikitext-rows/2" }))).origin, "built");
    assertEquals(h.builds, 4);
    // a source of another size
    await Deno.writeTextFile(h.src, " = B = \n");
    assertEquals((await loadOrBuildSplit(h.opts({ recipe: "wikitext-rows/2" }))).origin, "built");
    assertEquals(h.builds, 5);
  });
});

Deno.test("cache: a corrupt or truncated .npy is rebuilt with a warning", async () => {
  await harness(async (h) => {
    const a = await loadOrBuildSplit(h.opts());
    const npy = `${h.cacheDir}/test.npy`;
    const bytes = await Deno.readFile(npy);
    await Deno.writeFile(npy, bytes.subarray(0, bytes.length - 3)); // truncated
    const b = await loadOrBuildSplit(h.opts());
    assertEquals(b.origin, "built");
    assert(
      h.logs.some((l) => l.startsWith("warning:") && l.includes("corrupt")),
      h.logs.join("\n"),
    );
    assertEquals([...b.tokens], [...a.tokens]);
    assertEquals((await Deno.readFile(npy)).length, bytes.length);
    await Deno.writeFile(npy, new TextEncoder().encode("garbage"));
    assertEquals((await loadOrBuildSplit(h.opts())).origin, "built");
    // a sidecar that disagrees with the .npy length also rebuilds
    await Deno.writeFile(npy, encodeNpyU16(Uint16Array.from([1, 2, 3])));
    assertEquals((await loadOrBuildSplit(h.opts())).origin, "built");
    // an unreadable sidecar
    await Deno.writeTextFile(`${h.cacheDir}/test.meta.json`, "{ not json");
    assertEquals((await loadOrBuildSplit(h.opts())).origin, "built");
    assertEquals(h.builds, 5);
    await noTempFiles(h.cacheDir);
  });
});

Deno.test("cache: a reference-built .npy without sidecar is used; missing sources", async () => {
  await harness(async (h) => {
    await Deno.mkdir(h.cacheDir, { recursive: true });
    await Deno.writeFile(
      `${h.cacheDir}/test.npy`,
      encodeNpyU16(Uint16Array.from([7, 8, 9, 50256])),
    );
    const a = await loadOrBuildSplit(h.opts());
    assertEquals(a.origin, "cache");
    assertEquals([...a.tokens], [7, 8, 9, 50256]);
    assert(h.logs.some((l) => l.includes("no test.meta.json")));
    assertEquals(h.builds, 0);
    // no sources but a valid cache: used
    await Deno.remove(`${h.cacheDir}/test.npy`);
    await loadOrBuildSplit(h.opts());
    assertEquals((await loadOrBuildSplit(h.opts({ sources: null }))).origin, "cache");
    // no sources and no cache: the dataset's own error
    await Deno.remove(`${h.cacheDir}/test.npy`);
    let err: unknown = null;
    await loadOrBuildSplit(h.opts({ sources: null })).catch((e) => (err = e));
    assert(err instanceof BasedError && err.message.includes("not found"));
    // no sources and a corrupt cache: a clear error
    await Deno.writeTextFile(`${h.cacheDir}/test.npy`, "junk");
    err = null;
    await loadOrBuildSplit(h.opts({ sources: null })).catch((e) => (err = e));
    assert(err instanceof BasedError && err.message.includes("corrupt"), String(err));
    // no cache dir: tokenised in memory
    assertEquals((await loadOrBuildSplit(h.opts({ dir: null }))).origin, "memory");
  });
});
