/**
 * The data module: the resolved `datamodule` config section → token splits →
 * LM datasets (the reference's `train/datamodules/language_modeling_hf.py::LMDataModule`).
 *
 * Keys read (others are ignored):
 * - `dataset_name`: `wikitext` or `kjv` (the bundled King James Bible);
 * - `dataset_config_name` (wikitext): `wikitext-103-v1` (default), `wikitext-2-v1`,
 *   `wikitext-103-raw-v1`, `wikitext-2-raw-v1`;
 * - `data_dir` (wikitext, required): folder with the files (relative to `cwd`),
 *   see wikitext.ts for the layouts;
 * - `cache_dir` (optional; relative to `cwd`): token cache root (cache.ts); unset
 *   or null = tokenise in memory every time;
 * - `max_length` (required), `add_eos` (default true), `tokenizer_name` (only `gpt2`),
 *   `detokenize` (only false), `val_ratio` / `val_split_seed` (only in the cache
 *   folder's name, as in the reference), `num_workers` (caps tokeniser threads),
 *   `strip_references` (kjv, default true).
 */
import { BasedError } from "../errors.ts";
import { cacheDirName, loadOrBuildSplit, type SourceInput } from "./cache.ts";
import { KJV_RECIPE, kjvBytes, kjvSplitRows } from "./kjv.ts";
import { LMDataset } from "./lm_dataset.ts";
import { tokenizeRows } from "./tokenize/mod.ts";
import { TOKENIZER_NAME } from "./tokenize/mod.ts";
import {
  findSplitFiles,
  missingSplitError,
  normalizeSplit,
  type Split,
  SPLITS,
  tokenizeSplitFiles,
  WIKITEXT_CONFIGS,
  WIKITEXT_RECIPE,
} from "./wikitext.ts";

export type { Split } from "./wikitext.ts";

export interface DataModuleInfo {
  /** e.g. "wikitext/wikitext-103-v1", "kjv" */
  dataset: string;
  seqLen: number;
  /** the cache folder in use, or null */
  cacheDir: string | null;
  /** tokens per loaded split */
  tokens: Partial<Record<Split, number>>;
  /** windows (sequences) per loaded split */
  sequences: Partial<Record<Split, number>>;
  /** where each loaded split's tokens came from */
  origin: Partial<Record<Split, "cache" | "built" | "memory">>;
}

export interface DataModule {
  train: LMDataset;
  validation: LMDataset;
  test: LMDataset;
  info: DataModuleInfo;
}

export interface LoadDataModuleOptions {
  /** the folder relative paths are resolved against */
  cwd: string;
  log?: (s: string) => void;
  /** splits to load (default all three); reading another split throws */
  splits?: readonly string[];
}

function resolvePath(p: string, cwd: string): string {
  if (p.startsWith("/") || /^[A-Za-z]:[\\/]/.test(p)) return p;
  const base = cwd.replace(/\/+$/, "");
  return p === "." ? base : `${base}/${p.replace(/^\.\//, "")}`;
}

function str(dm: Record<string, unknown>, key: string): string | undefined {
  const v = dm[key];
  return v === undefined || v === null || v === "" ? undefined : String(v);
}

function bool(dm: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = dm[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v === "boolean") return v;
  if (v === "true" || v === "True") return true;
  if (v === "false" || v === "False") return false;
  throw new BasedError(`datamodule.${key} must be true or false, got ${JSON.stringify(v)}`);
}

function num(dm: Record<string, unknown>, key: string, dflt?: number): number {
  const v = dm[key];
  if (v === undefined || v === null) {
    if (dflt === undefined) throw new BasedError(`datamodule.${key} is not set`);
    return dflt;
  }
  const x = typeof v === "number" ? v : Number(v);
  if (!Number.isFinite(x)) {
    throw new BasedError(`datamodule.${key} must be a number, got ${JSON.stringify(v)}`);
  }
  return x;
}

/** Loads the splits named in `opts.splits` (default all) as LM datasets. */
export async function loadDataModule(
  dm: Record<string, unknown>,
  opts: LoadDataModuleOptions,
): Promise<DataModule> {
  const log = opts.log ?? (() => {});
  if (!dm || typeof dm !== "object") throw new BasedError("the config has no datamodule section");
  const name = str(dm, "dataset_name");
  if (!name) throw new BasedError("datamodule.dataset_name is not set", "use wikitext or kjv");
  const seqLen = num(dm, "max_length");
  if (!Number.isInteger(seqLen) || seqLen < 1) {
    throw new BasedError(`datamodule.max_length must be a positive integer, got ${seqLen}`);
  }
  const addEos = bool(dm, "add_eos", true);
  const tok = str(dm, "tokenizer_name") ?? TOKENIZER_NAME;
  if (tok !== TOKENIZER_NAME) {
    throw new BasedError(
      `datamodule.tokenizer_name ${tok} is not supported`,
      "only gpt2 is available",
    );
  }
  if (bool(dm, "detokenize", false)) {
    throw new BasedError(
      "datamodule.detokenize=true is not supported",
      "the reference leaves it false",
    );
  }
  const nw = dm.num_workers === undefined || dm.num_workers === null
    ? undefined
    : num(dm, "num_workers");
  const hc = typeof navigator !== "undefined" ? navigator.hardwareConcurrency ?? 1 : 1;
  const workers = nw === undefined ? undefined : Math.max(0, Math.min(Math.floor(nw), hc, 16));
  const cacheRoot = str(dm, "cache_dir");
  const splits = [...new Set((opts.splits ?? SPLITS).map(normalizeSplit))];

  let dataset: string;
  let cacheDir: string | null = null;
  let recipe: string;
  let sourcesOf: (s: Split) => Promise<SourceInput[] | null>;
  let missing: (s: Split) => BasedError;
  let build: (s: Split, sources: SourceInput[]) => Promise<Uint16Array>;

  const lname = name.toLowerCase();
  if (lname === "wikitext") {
    const config = str(dm, "dataset_config_name") ?? "wikitext-103-v1";
    if (!(WIKITEXT_CONFIGS as readonly string[]).includes(config)) {
      throw new BasedError(
        `unknown wikitext config ${config}`,
        `use one of ${WIKITEXT_CONFIGS.join(", ")}`,
      );
    }
    const dd = str(dm, "data_dir");
    if (!dd) {
      throw new BasedError(
        "datamodule.data_dir is not set",
        "point it at the folder with the WikiText files (or set DATA_DIR)",
      );
    }
    const dataDir = resolvePath(dd, opts.cwd);
    dataset = `wikitext/${config}`;
    recipe = WIKITEXT_RECIPE;
    if (cacheRoot) {
      cacheDir = `${resolvePath(cacheRoot, opts.cwd).replace(/\/+$/, "")}/` + cacheDirName({
        tokenizerName: tok,
        valRatio: num(dm, "val_ratio", 0.0005),
        valSplitSeed: num(dm, "val_split_seed", 2357),
        addEos,
        detokenize: false,
      });
    }
    const found = new Map<Split, Awaited<ReturnType<typeof findSplitFiles>>>();
    sourcesOf = async (s) => {
      const f = await findSplitFiles(dataDir, config, s);
      found.set(s, f);
      return f ? f.files.map((path) => ({ path })) : null;
    };
    missing = (s) => missingSplitError(dataDir, config, s);
    build = (s, sources) =>
      tokenizeSplitFiles(
        found.get(s)!,
        { addEos, log, label: `${config} ${s}`, workers },
        (p, b) => {
          const src = sources.find((x) => x.path === p);
          if (src) src.bytes = b; // hashed for the sidecar without a second read
        },
      );
  } else if (lname === "kjv") {
    const strip = bool(dm, "strip_references", true);
    dataset = "kjv";
    recipe = `${KJV_RECIPE} strip_references=${strip}`;
    if (cacheRoot) {
      cacheDir = `${resolvePath(cacheRoot, opts.cwd).replace(/\/+$/, "")}/` +
        `kjv-strip_references-${strip ? "True" : "False"}-tokenizer_name-${tok}-add_eos-${
          addEos ? "True" : "False"
        }`;
    }
    let rows: Promise<Record<Split, string[]>> | null = null;
    const source = async (): Promise<SourceInput[]> => [
      { path: "bundled:data/corpora/kjv.txt.gz.b64", bytes: await kjvBytes(), embedded: true },
    ];
    sourcesOf = () => source();
    missing = () => new BasedError("the bundled KJV corpus is missing");
    build = async (s) => {
      rows ??= kjvBytes().then((b) =>
        kjvSplitRows(new TextDecoder().decode(b), { stripReferences: strip })
      );
      return tokenizeRows((await rows)[s], { addEos, log, label: `kjv ${s}`, workers });
    };
  } else {
    throw new BasedError(`unknown datamodule.dataset_name ${name}`, "use wikitext or kjv");
  }

  const loaded = new Map<Split, LMDataset>();
  const info: DataModuleInfo = { dataset, seqLen, cacheDir, tokens: {}, sequences: {}, origin: {} };
  for (const s of splits) {
    const sources = await sourcesOf(s);
    const r = await loadOrBuildSplit({
      dir: cacheDir,
      split: s,
      addEos,
      recipe,
      sources,
      missing: () => missing(s),
      build: (sources) => build(s, sources),
      log,
    });
    const ds = new LMDataset(r.tokens, seqLen);
    if (ds.length < 1) {
      // files on disk that hold no text (e.g. an interrupted download): name them
      const files = (sources ?? []).filter((x) => !x.embedded).map((x) => x.path);
      throw new BasedError(
        r.tokens.length === 0
          ? `the ${dataset} ${s} split is empty (0 tokens${
            files.length ? ` in ${files.join(", ")}` : ""
          })`
          : `the ${dataset} ${s} split has ${r.tokens.length} tokens, fewer than max_length + 1 = ` +
            `${seqLen + 1}: not one sequence`,
        r.tokens.length === 0 && files.length
          ? `the files hold no text; ${missing(s).hint ?? "provide the data"}`
          : "use a larger corpus or a smaller datamodule.max_length",
      );
    }
    loaded.set(s, ds);
    info.tokens[s] = r.tokens.length;
    info.sequences[s] = ds.length;
    info.origin[s] = r.origin;
  }
  log(
    `data: ${dataset}, max_length ${seqLen}: ` +
      splits.map((s) =>
        `${s} ${info.tokens[s]!.toLocaleString("en-US")} tokens / ${
          info.sequences[s]!.toLocaleString("en-US")
        } sequences`
      ).join(", "),
  );

  const get = (s: Split): LMDataset => {
    const ds = loaded.get(s);
    if (!ds) {
      throw new BasedError(`the ${s} split was not loaded`, "pass it in loadDataModule's splits");
    }
    return ds;
  };
  return {
    get train() {
      return get("train");
    },
    get validation() {
      return get("validation");
    },
    get test() {
      return get("test");
    },
    info,
  };
}
