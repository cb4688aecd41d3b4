/**
 * The token cache (the reference's, `process_dataset` in
 * `train/datamodules/language_modeling_hf.py`; docs/reference.md, Data).
 *
 * Layout, interchangeable with the reference:
 *
 *     <cache_dir>/tokenizer_name-gpt2-val_ratio-0.0005-val_split_seed-2357-add_eos-True-detokenize-False/
 *       train.npy  validation.npy  test.npy      NumPy .npy v1.0, dtype <u2, 1-D
 *
 * plus, ours only, a sidecar `<split>.meta.json` per split:
 *
 *     { "format": "based-token-cache/1", "split": "test", "tokenizer": TOKENIZER_ID,
 *       "add_eos": true, "recipe": "wikitext-rows/1", "num_tokens": 285191,
 *       "sources": [{ "path": "/…/wiki.test.tokens", "size": 1281077,
 *                     "mtime_ms": 1764375780000, "sha256": "56db…" }],
 *       "created": "2025-…" }
 *
 * Reuse rule: the `.npy` is used when it parses (magic, header, exact length),
 * its length equals `num_tokens`, the tokenizer / add_eos / recipe match, and
 * every source has the recorded size and either the recorded mtime or (when
 * only the mtime differs, e.g. after a copy) the recorded sha256. Otherwise it
 * is rebuilt (with a log line saying why). A `.npy` without sidecar (e.g. built
 * by the reference) is used as it is, with a log line. When the sources are
 * not available a valid cache is still used. Files are written atomically
 * (temporary file + rename), the `.npy` before its sidecar.
 */
import { BasedError } from "../errors.ts";
import { decodeNpyU16, npyBodyU16, NpyFormatError, npyHeaderU16 } from "./npy.ts";
import { TOKENIZER_ID, TOKENIZER_NAME } from "./tokenize/mod.ts";

export const CACHE_FORMAT = "based-token-cache/1";

/** The reference's cache directory name (`LMDataModule._cache_dir_name`). */
export function cacheDirName(o: {
  tokenizerName?: string;
  valRatio?: number;
  valSplitSeed?: number;
  addEos?: boolean;
  detokenize?: boolean;
} = {}): string {
  return `tokenizer_name-${o.tokenizerName ?? TOKENIZER_NAME}` +
    `-val_ratio-${pyNumber(o.valRatio ?? 0.0005)}` +
    `-val_split_seed-${pyNumber(o.valSplitSeed ?? 2357)}` +
    `-add_eos-${pyBool(o.addEos ?? true)}-detokenize-${pyBool(o.detokenize ?? false)}`;
}

function pyBool(b: boolean): string {
  return b ? "True" : "False";
}

/** Python's str() of a number (repr uses exponent form below 1e-4 and from 1e16). */
export function pyNumber(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
    const [m, e] = x.toExponential().split("e");
    const ei = Number(e);
    return `${m}e${ei < 0 ? "-" : "+"}${String(Math.abs(ei)).padStart(2, "0")}`;
  }
  return String(x);
}

/**
 * A source of a split: a file (`path`), or in-memory content (`embedded`, e.g.
 * the bundled corpus, identified by its bytes' hash). A builder that has read
 * a file may leave its bytes in `bytes` so the sidecar's hash needs no second
 * read.
 */
export interface SourceInput {
  path: string;
  bytes?: Uint8Array;
  embedded?: boolean;
}

export interface SourceRecord {
  path: string;
  size: number;
  mtime_ms: number | null;
  sha256: string;
}

export interface CacheMeta {
  format: string;
  split: string;
  tokenizer: string;
  add_eos: boolean;
  recipe: string;
  num_tokens: number;
  sources: SourceRecord[];
  created: string;
}

export interface SplitCacheOptions {
  /** the cache directory (the `tokenizer_name-…` one); null = no caching */
  dir: string | null;
  split: string;
  addEos: boolean;
  /** names the row/tokenisation rule; a change rebuilds */
  recipe: string;
  /** the split's sources, or null when they are not available */
  sources: SourceInput[] | null;
  /** thrown when neither a usable cache nor the sources exist */
  missing: () => BasedError;
  /** tokenises the sources */
  build: (sources: SourceInput[]) => Promise<Uint16Array>;
  log?: (s: string) => void;
}

export interface SplitCacheResult {
  tokens: Uint16Array;
  /** "cache" (reused), "built" (tokenised and written), "memory" (tokenised, not cached) */
  origin: "cache" | "built" | "memory";
  path: string | null;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

async function describe(s: SourceInput): Promise<SourceRecord> {
  if (s.embedded) {
    const b = s.bytes ?? new Uint8Array(0);
    return { path: s.path, size: b.length, mtime_ms: null, sha256: await sha256Hex(b) };
  }
  const st = await Deno.stat(s.path);
  const bytes = s.bytes && s.bytes.length === st.size ? s.bytes : await Deno.readFile(s.path);
  return {
    path: s.path,
    size: st.size,
    mtime_ms: st.mtime?.getTime() ?? null,
    sha256: await sha256Hex(bytes),
  };
}

/** Why the recorded source no longer matches, or null when it does. */
async function sourceChange(rec: SourceRecord, s: SourceInput): Promise<string | null> {
  if (s.embedded && s.bytes) {
    if (rec.size !== s.bytes.length) return `${s.path}: size ${rec.size} → ${s.bytes.length}`;
    return rec.sha256 === await sha256Hex(s.bytes) ? null : `${s.path}: content changed`;
  }
  const st = await statOrNull(s.path);
  if (!st) return `${s.path}: missing`;
  if (st.size !== rec.size) return `${s.path}: size ${rec.size} → ${st.size}`;
  const mt = st.mtime?.getTime() ?? null;
  if (mt !== null && mt === rec.mtime_ms) return null;
  return rec.sha256 === await sha256Hex(await Deno.readFile(s.path))
    ? null
    : `${s.path}: content changed`;
}

/** Why the cache is stale, or null when it may be used. */
async function staleness(
  meta: CacheMeta,
  tokens: Uint16Array,
  o: SplitCacheOptions,
): Promise<string | null> {
  if (meta.format !== CACHE_FORMAT) return `cache format ${meta.format}`;
  if (meta.num_tokens !== tokens.length) {
    return `the .npy holds ${tokens.length} tokens, the sidecar says ${meta.num_tokens}`;
  }
  if (meta.tokenizer !== TOKENIZER_ID) return `tokenizer ${meta.tokenizer} → ${TOKENIZER_ID}`;
  if (meta.add_eos !== o.addEos) return `add_eos ${meta.add_eos} → ${o.addEos}`;
  if (meta.recipe !== o.recipe) return `recipe ${meta.recipe} → ${o.recipe}`;
  if (o.sources === null) return null;
  if (meta.sources.length !== o.sources.length) {
    return `${meta.sources.length} source files → ${o.sources.length}`;
  }
  for (let i = 0; i < o.sources.length; i++) {
    const why = await sourceChange(meta.sources[i], o.sources[i]);
    if (why) return why;
  }
  return null;
}

/** Writes `parts` to `path` atomically (temporary file in the same folder + rename). */
export async function writeAtomic(path: string, ...parts: Uint8Array[]): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      for (const data of parts) {
        let off = 0;
        while (off < data.length) off += await f.write(data.subarray(off));
      }
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function readMeta(path: string): Promise<CacheMeta | null | "corrupt"> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const m = JSON.parse(text);
    if (typeof m !== "object" || m === null || !Array.isArray(m.sources)) return "corrupt";
    return m as CacheMeta;
  } catch {
    return "corrupt";
  }
}

/**
 * The tokens of one split: from the cache when valid, otherwise built from the
 * sources and written to the cache (when `dir` is set and writable).
 */
export async function loadOrBuildSplit(o: SplitCacheOptions): Promise<SplitCacheResult> {
  const log = o.log ?? (() => {});
  const npyPath = o.dir ? `${o.dir}/${o.split}.npy` : null;
  const metaPath = o.dir ? `${o.dir}/${o.split}.meta.json` : null;

  if (npyPath && metaPath) {
    let bytes: Uint8Array | null = null;
    try {
      bytes = await Deno.readFile(npyPath);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (bytes) {
      let tokens: Uint16Array | null = null;
      try {
        tokens = decodeNpyU16(bytes);
      } catch (e) {
        if (!(e instanceof NpyFormatError)) throw e;
        if (!o.sources) {
          throw new BasedError(
            `token cache ${npyPath} is corrupt (${e.message}) and the source data is missing`,
            `delete it and provide the data: ${o.missing().message}`,
          );
        }
        log(`warning: token cache ${npyPath} is corrupt (${e.message}); rebuilding it`);
      }
      if (tokens) {
        const meta = await readMeta(metaPath);
        if (meta === null) {
          log(
            `using ${npyPath} (${tokens.length.toLocaleString("en-US")} tokens) as it is: ` +
              `no ${o.split}.meta.json beside it, so it is not checked against the source ` +
              `(delete it to rebuild)`,
          );
          return { tokens, origin: "cache", path: npyPath };
        }
        const why = meta === "corrupt" ? "unreadable sidecar" : await staleness(meta, tokens, o);
        if (why === null) {
          if (!o.sources) {
            log(`using ${npyPath}: its source files are not available to check it against`);
          }
          return { tokens, origin: "cache", path: npyPath };
        }
        if (!o.sources) {
          log(`warning: ${npyPath} may be stale (${why}) but its sources are missing; using it`);
          return { tokens, origin: "cache", path: npyPath };
        }
        log(`token cache ${npyPath} is stale (${why}); rebuilding it`);
      }
    }
  }

  if (!o.sources) throw o.missing();
  const tokens = await o.build(o.sources);
  if (!npyPath || !metaPath || !o.dir) return { tokens, origin: "memory", path: null };
  try {
    await Deno.mkdir(o.dir, { recursive: true });
    const meta: CacheMeta = {
      format: CACHE_FORMAT,
      split: o.split,
      tokenizer: TOKENIZER_ID,
      add_eos: o.addEos,
      recipe: o.recipe,
      num_tokens: tokens.length,
      sources: await Promise.all(o.sources.map(describe)),
      created: new Date().toISOString(),
    };
    await writeAtomic(npyPath, npyHeaderU16(tokens.length), npyBodyU16(tokens));
    await writeAtomic(metaPath, new TextEncoder().encode(JSON.stringify(meta, null, 1) + "\n"));
  } catch (e) {
    if (
      e instanceof Deno.errors.PermissionDenied ||
      (e instanceof Error && /read-only/i.test(e.message))
    ) {
      log(
        `warning: cannot write the token cache in ${o.dir} (${e.message}); continuing without it`,
      );
      return { tokens, origin: "memory", path: null };
    }
    throw e;
  }
  log(`wrote ${npyPath} (${tokens.length.toLocaleString("en-US")} tokens)`);
  return { tokens, origin: "built", path: npyPath };
}
