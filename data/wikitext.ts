/**
 * WikiText reader (`train/configs/datamodule/wikitext103.yaml`'s dataset) for both layouts:
 *
 * - original (Salesforce release): `wiki.{train,valid,test}.tokens`, or
 *   `wiki.*.raw` for the raw configs; rows by `textToRows` (split after each
 *   "\n", keeping it; whitespace-only lines → "");
 * - Hugging Face parquet: `{train,validation,test}-0000i-of-0000n.parquet`,
 *   column `text`, files in shard order, rows in file order.
 *
 * Looked up, in this order, in `<data_dir>/<config>` (e.g. `wikitext-103-v1`),
 * `<data_dir>/<release folder>` (e.g. `wikitext-103`, `wikitext-103-raw`) and
 * `<data_dir>` itself; in each folder the `.tokens`/`.raw` file wins over
 * parquet shards.
 */
import { type Compressors, parquetReadObjects } from "hyparquet";
import * as zlib from "node:zlib";
import { BasedError } from "../errors.ts";
import { isBlank, textToRows } from "./rows.ts";
import { type TokenizeOptions, tokenizeRows, tokenizeTextBytes } from "./tokenize/mod.ts";

export type Split = "train" | "validation" | "test";
export const SPLITS: readonly Split[] = ["train", "validation", "test"];

/** The row rule's name in cache metadata (bump when rows or tokenisation change). */
export const WIKITEXT_RECIPE = "wikitext-rows/1";

/** "valid"/"val"/"validation" → "validation"; "train"; "test". */
export function normalizeSplit(s: string): Split {
  const k = s.trim().toLowerCase();
  if (k === "train") return "train";
  if (k === "validation" || k === "valid" || k === "val") return "validation";
  if (k === "test") return "test";
  throw new BasedError(`unknown split "${s}"`, "use train, validation (or valid) or test");
}

export const WIKITEXT_CONFIGS = [
  "wikitext-103-v1",
  "wikitext-2-v1",
  "wikitext-103-raw-v1",
  "wikitext-2-raw-v1",
] as const;

/** Where one split of a WikiText config lives. */
export type SplitFiles =
  | { layout: "text"; files: [string] }
  | { layout: "parquet"; files: string[] };

function isRaw(config: string): boolean {
  return /(^|-)raw(-|$)/.test(config);
}

/** `wikitext-103-v1` → `wikitext-103`, `wikitext-2-raw-v1` → `wikitext-2-raw` (the release folders). */
function releaseFolder(config: string): string {
  return config.replace(/-v\d+$/, "");
}

function textName(config: string, split: Split): string {
  const s = split === "validation" ? "valid" : split;
  return `wiki.${s}.${isRaw(config) ? "raw" : "tokens"}`;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return false;
    throw e;
  }
}

async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile || e.isSymlink) out.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return [];
    throw e;
  }
  return out;
}

function join(a: string, b: string): string {
  return a.endsWith("/") ? a + b : `${a}/${b}`;
}

/** The folders searched for a config, in order (deduplicated). */
export function searchDirs(dataDir: string, config: string): string[] {
  const d = dataDir.replace(/\/+$/, "") || "/";
  return [...new Set([join(d, config), join(d, releaseFolder(config)), d])];
}

/** Parquet shards of a split in a folder, in shard order; throws if some shard is missing. */
async function parquetShards(dir: string, split: Split): Promise<string[]> {
  const re = new RegExp(`^${split}-(\\d+)-of-(\\d+)\\.parquet$`);
  const found = new Map<number, string>();
  let total = -1;
  for (const name of await listDir(dir)) {
    const m = re.exec(name);
    if (!m) continue;
    const n = Number(m[2]);
    if (total >= 0 && n !== total) {
      throw new BasedError(
        `${dir}: ${split} parquet shards disagree on their count (${total} vs ${n})`,
      );
    }
    total = n;
    found.set(Number(m[1]), join(dir, name));
  }
  if (found.size === 0) {
    const single = join(dir, `${split}.parquet`);
    return (await isFile(single)) ? [single] : [];
  }
  const files: string[] = [];
  for (let i = 0; i < total; i++) {
    const f = found.get(i);
    if (!f) {
      const name = `${split}-${String(i).padStart(5, "0")}-of-${
        String(total).padStart(5, "0")
      }.parquet`;
      throw new BasedError(
        `${dir}: parquet shard ${name} is missing`,
        "download every shard of the split",
      );
    }
    files.push(f);
  }
  return files;
}

/** Finds a split's files, or null. */
export async function findSplitFiles(
  dataDir: string,
  config: string,
  split: Split,
): Promise<SplitFiles | null> {
  for (const dir of searchDirs(dataDir, config)) {
    const t = join(dir, textName(config, split));
    if (await isFile(t)) return { layout: "text", files: [t] };
    const shards = await parquetShards(dir, split);
    if (shards.length) return { layout: "parquet", files: shards };
  }
  return null;
}

/** The one-line error for a split that is not there. */
export function missingSplitError(dataDir: string, config: string, split: Split): BasedError {
  const dirs = searchDirs(dataDir, config);
  const fix = config.startsWith("wikitext-103")
    ? `download ${config} from the Salesforce release (wikitext-103${
      isRaw(config) ? "-raw" : ""
    }-v1.zip) ` +
      `or the HF dataset Salesforce/wikitext (config ${config}) and point datamodule.data_dir at it`
    : `download ${config} from the Salesforce release or the HF dataset Salesforce/wikitext ` +
      `(config ${config}) and point datamodule.data_dir at it`;
  return new BasedError(
    `${config} ${split} split not found: looked for ${textName(config, split)} or ` +
      `${split}-0000i-of-0000n.parquet in ${dirs.join(", ")}`,
    fix,
  );
}

type Inflate = (b: Uint8Array) => Uint8Array;
const z = zlib as unknown as Record<string, Inflate | undefined>;
const inflater = (f: Inflate | undefined): ((b: Uint8Array) => Uint8Array) | undefined =>
  f ? (b) => new Uint8Array(f(b)) : undefined;
/** Codecs beyond hyparquet's built-in SNAPPY (HF's default): GZIP, BROTLI, ZSTD via node:zlib. */
const COMPRESSORS: Compressors = {
  GZIP: inflater(z.gunzipSync),
  BROTLI: inflater(z.brotliDecompressSync),
  ZSTD: inflater(z.zstdDecompressSync),
};

/** Called with each source file's bytes as they are read (lets the cache hash them once). */
export type OnRead = (path: string, bytes: Uint8Array) => void;

/**
 * The `text` column of parquet files, in order, as rows (rows.ts) (null → "", whitespace-only →
 * "").
 */
export async function readParquetRows(files: string[], onRead?: OnRead): Promise<string[]> {
  const rows: string[] = [];
  const dec = new TextDecoder();
  for (const f of files) {
    const bytes = await Deno.readFile(f);
    onRead?.(f, bytes);
    const buf = bytes.buffer.slice(
      bytes.byteOffset,
      bytes.byteOffset + bytes.byteLength,
    ) as ArrayBuffer;
    let objs: Record<string, unknown>[];
    try {
      objs = await parquetReadObjects({ file: buf, columns: ["text"], compressors: COMPRESSORS });
    } catch (e) {
      throw new BasedError(
        `cannot read ${f} as parquet with a "text" column: ${e instanceof Error ? e.message : e}`,
      );
    }
    for (const o of objs) {
      const v = o.text;
      const s = v === null || v === undefined
        ? ""
        : typeof v === "string"
        ? v
        : v instanceof Uint8Array
        ? dec.decode(v)
        : String(v);
      rows.push(isBlank(s) ? "" : s);
    }
  }
  return rows;
}

/** The rows of a split (for inspection and tests; tokenising uses `tokenizeSplitFiles`). */
export async function readSplitRows(found: SplitFiles): Promise<string[]> {
  if (found.layout === "parquet") return await readParquetRows(found.files);
  return textToRows(
    new TextDecoder("utf-8", { ignoreBOM: true }).decode(await Deno.readFile(found.files[0])),
  );
}

/**
 * Tokens of a split (as `process_dataset`): every non-empty row → ids + EOS, concatenated in row
 * order.
 */
export async function tokenizeSplitFiles(
  found: SplitFiles,
  o: TokenizeOptions = {},
  onRead?: OnRead,
): Promise<Uint16Array> {
  if (found.layout === "text") {
    const bytes = await Deno.readFile(found.files[0]);
    onRead?.(found.files[0], bytes);
    return await tokenizeTextBytes(bytes, o);
  }
  return await tokenizeRows(await readParquetRows(found.files, onRead), o);
}
