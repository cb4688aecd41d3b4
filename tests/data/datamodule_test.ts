/** The data module on WikiText (shared files and a temporary layout) and the bundled KJV corpus. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { WIKITEXT as WT, wikitextTest } from "../helpers.ts";
import { loadDataModule } from "../../data/datamodule.ts";
import { KJV_LINES, KJV_SHA256, kjvBytes, kjvSplitRows, kjvText } from "../../data/kjv.ts";
import { encode } from "../../data/tokenize/mod.ts";
import { BasedError } from "../../errors.ts";

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

wikitextTest("datamodule: WikiText-103 validation/test from the shared folder", async () => {
  const logs: string[] = [];
  const dm = await loadDataModule(
    {
      dataset_name: "wikitext",
      dataset_config_name: "wikitext-103-v1",
      data_dir: WT,
      max_length: 2048,
    },
    { cwd: "/", log: (s) => logs.push(s), splits: ["validation", "test"] },
  );
  assertEquals(dm.info.tokens, { validation: 249_598, test: 285_191 });
  assertEquals(dm.validation.length, 121); // floor(249597 / 2048)
  assertEquals(dm.test.length, 139); // floor(285190 / 2048)
  assertEquals(dm.info.origin, { validation: "memory", test: "memory" });
  const e = await rejection(Promise.resolve().then(() => dm.train));
  assert(e instanceof BasedError && e.message.includes("not loaded"));
  assert(
    logs.some((l) => l.includes("validation 249,598 tokens / 121 sequences")),
    logs.join("\n"),
  );
});

Deno.test("datamodule: missing WikiText-103 train is a one-line error with the fix", async () => {
  const e = await rejection(
    loadDataModule({
      dataset_name: "wikitext",
      dataset_config_name: "wikitext-103-v1",
      data_dir: WT,
      max_length: 2048,
    }, {
      cwd: "/",
    }),
  );
  assert(e instanceof BasedError, String(e));
  assert(!e.message.includes("\n"));
  for (
    const s of [
      "train split not found",
      "wiki.train.tokens",
      "Salesforce/wikitext",
      "datamodule.data_dir",
    ]
  ) {
    assert(e.message.includes(s), `${s} missing from: ${e.message}`);
  }
});

Deno.test("datamodule: relative data_dir/cache_dir, cache reuse, short and unknown datasets", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${cwd}/data/wikitext103/wikitext-2-v1`, { recursive: true });
    const d = `${cwd}/data/wikitext103/wikitext-2-v1`;
    const para = " The quick brown fox jumps over the lazy dog . \n";
    await Deno.writeTextFile(`${d}/wiki.train.tokens`, ` = T = \n \n${para.repeat(40)}`);
    await Deno.writeTextFile(`${d}/wiki.valid.tokens`, ` = V = \n \n${para.repeat(5)}`);
    await Deno.writeTextFile(`${d}/wiki.test.tokens`, ` = X = \n \n${para.repeat(5)}`);
    const cfg = {
      dataset_name: "wikitext",
      dataset_config_name: "wikitext-2-v1",
      data_dir: "data/wikitext103",
      cache_dir: "data/wikitext103/cache",
      max_length: 16,
      add_eos: true,
    };
    const a = await loadDataModule(cfg, { cwd });
    assertEquals(a.info.origin, { train: "built", validation: "built", test: "built" });
    // heading and paragraphs: ids + EOS each; the blank line: nothing
    assertEquals(
      a.info.tokens.train,
      encode(" = T = \n").length + 1 + 40 * (encode(para).length + 1),
    );
    assertEquals(a.train.length, Math.floor((a.info.tokens.train! - 1) / 16));
    const b = await loadDataModule(cfg, { cwd });
    assertEquals(b.info.origin, { train: "cache", validation: "cache", test: "cache" });
    assertEquals([...b.train.tokens], [...a.train.tokens]);
    await Deno.stat(
      `${cwd}/data/wikitext103/cache/tokenizer_name-gpt2-val_ratio-0.0005-val_split_seed-2357-add_eos-True-detokenize-False/train.npy`,
    );
    // a split shorter than one window
    const short = await rejection(loadDataModule({ ...cfg, max_length: 200 }, { cwd }));
    assert(short instanceof BasedError && short.message.includes("max_length + 1"), String(short));
    // an empty split
    await Deno.writeTextFile(`${d}/wiki.test.tokens`, " \n \n");
    const empty = await rejection(loadDataModule(cfg, { cwd }));
    assert(empty instanceof BasedError && empty.message.includes("empty"), String(empty));
    for (
      const bad of [{ dataset_name: "pile" }, {
        dataset_name: "wikitext",
        dataset_config_name: "wikitext-9",
      }, {
        tokenizer_name: "llama",
      }, { data_dir: null }]
    ) {
      const e = await rejection(loadDataModule({ ...cfg, ...bad }, { cwd }));
      assert(e instanceof BasedError, String(e));
    }
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("datamodule: the bundled KJV corpus, its split rule and sizes", async () => {
  const bytes = await kjvBytes();
  assertEquals(bytes.length, 4_404_412);
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  assertEquals(Array.from(d, (b) => b.toString(16).padStart(2, "0")).join(""), KJV_SHA256);
  const text = await kjvText();
  const rows = kjvSplitRows(text);
  assertEquals([rows.train.length, rows.validation.length, rows.test.length], [30_480, 311, 311]);
  assertEquals(rows.train.length + rows.validation.length + rows.test.length, KJV_LINES);
  assertEquals(rows.train[0], "In the beginning God created the heaven and the earth.\n");
  assertEquals(rows.test[310], "The grace of our Lord Jesus Christ be with you all. Amen.\n");
  assertEquals(kjvSplitRows(text, { stripReferences: false }).train[0].slice(0, 6), "Ge1:1 ");

  const logs: string[] = [];
  const dm = await loadDataModule({ dataset_name: "kjv", max_length: 512 }, {
    cwd: "/",
    log: (s) => logs.push(s),
  });
  assertEquals(dm.info.tokens, { train: 1_033_265, validation: 10_520, test: 11_861 });
  assertEquals(dm.info.sequences, { train: 2018, validation: 20, test: 23 });
  assertEquals(dm.train.example(0).inputs[0], 818); // "In"
});
