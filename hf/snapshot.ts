/**
 * A Hugging Face snapshot of a released Based model (hazyresearch/based-360m,
 * based-1b, based-1b-50b): `config.json` and `model.safetensors` or
 * `pytorch_model.bin`, loaded as a checkpoint at step 0 with no optimizer
 * state, so that eval, generate and `train +init_from=DIR` take it like one
 * of ours. The weights are checked against the config: every parameter
 * present with its shape, nothing left over but the metric counters the
 * reference drops too (`*metrics*`), the tied `lm_head.weight` equal to the
 * word embedding, every value finite.
 */
import { join } from "node:path";
import { BasedError } from "../errors.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { declareParams } from "../model/params.ts";
import { parseSafetensors, tensorData } from "../tensor/safetensors.ts";
import type { LoadedCheckpoint } from "../train/checkpoint.ts";
import { mapHfConfig } from "./config_map.ts";
import { ZipArchive } from "./zip.ts";
import { TorchStateDict } from "./torch_load.ts";
import { LM_HEAD, untieLmHead } from "./tied.ts";

const exists = (p: string) => Deno.stat(p).then((s) => s.isFile, () => false);

/** The weights file of a snapshot folder (safetensors preferred), or null when it is none. */
export async function hfWeightsFile(dir: string): Promise<string | null> {
  if (!(await exists(join(dir, "config.json")))) return null;
  for (const f of ["model.safetensors", "pytorch_model.bin"]) {
    if (await exists(join(dir, f))) return join(dir, f);
  }
  for (const f of ["model.safetensors.index.json", "pytorch_model.bin.index.json"]) {
    if (await exists(join(dir, f))) {
      throw new BasedError(
        `${join(dir, f)}: sharded snapshots are not read yet`,
        "merge the shards into one model.safetensors",
      );
    }
  }
  return null;
}

export interface HfCheckpoint extends LoadedCheckpoint {
  /** one line: what was found */
  found: string;
}

/** Loads a snapshot folder (hfWeightsFile(dir) must not be null). */
export async function loadHfSnapshot(
  dir: string,
  warn: (s: string) => void = console.warn,
): Promise<HfCheckpoint> {
  const cfgPath = join(dir, "config.json");
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(cfgPath));
  } catch (e) {
    throw new BasedError(`${cfgPath}: not readable JSON (${(e as Error).message.split("\n")[0]})`);
  }
  const mapped = mapHfConfig(json, cfgPath);
  for (const n of mapped.notes) warn(`warning: ${cfgPath}: ${n}`);
  if (mapped.unknown.length) {
    warn(`warning: ${cfgPath}: keys based does not read (ignored): ${mapped.unknown.join(", ")}`);
  }
  const config = modelConfigFromCfg(mapped.modelConfig, mapped.maxLength);
  const decls = declareParams(config);
  const file = (await hfWeightsFile(dir))!;
  const weights = new Map<string, Float32Array>();
  const dtypes = new Set<string>();
  let skipped = 0;
  /** state_dict key -> our name (null: dropped as the reference drops it) */
  const ourName = (k: string) => {
    const n = k.replace(/^model\./, "");
    return /metrics/.test(n) ? null : n;
  };
  const want = new Map(decls.map((d) => [d.name, d]));
  const checkName = (k: string, n: string) => {
    if (!want.has(n) && n !== LM_HEAD) {
      throw new BasedError(
        `${file}: tensor '${k}' has no place in the model config.json describes`,
        "config.json and the weights are from different models",
      );
    }
  };
  if (file.endsWith(".bin")) {
    const zip = await ZipArchive.open(file);
    try {
      const sd = await TorchStateDict.read(zip);
      for (const k of sd.tensors.keys()) {
        const n = ourName(k);
        if (n === null) {
          skipped++;
          continue;
        }
        checkName(k, n);
        dtypes.add(sd.tensors.get(k)!.storage.dtype);
        checkShape(file, k, sd.tensors.get(k)!.shape, want.get(n)?.shape ?? want.get(EMB)!.shape);
        weights.set(n, await sd.float32(k));
      }
      sd.release();
    } finally {
      zip.close();
    }
  } else {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(file);
    } catch (e) {
      throw new BasedError(`${file}: cannot read (${(e as Error).message.split("\n")[0]})`);
    }
    const f = parseSafetensors(bytes, file);
    for (const [k, info] of f.tensors) {
      const n = ourName(k);
      if (n === null) {
        skipped++;
        continue;
      }
      checkName(k, n);
      if (!["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
        throw new BasedError(`${file}: tensor '${k}' is ${info.dtype}, not floating point`);
      }
      dtypes.add(info.dtype);
      checkShape(file, k, info.shape, want.get(n)?.shape ?? want.get(EMB)!.shape);
      weights.set(n, tensorData(f, k) as Float32Array);
    }
  }
  for (const d of decls) {
    if (!weights.has(d.name)) {
      throw new BasedError(
        `${file} has no tensor '${d.name}'`,
        "config.json and the weights are from different models",
      );
    }
  }
  untieLmHead(weights, file);
  for (const [n, v] of weights) {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) {
        throw new BasedError(
          `${file}: tensor '${n}' holds ${v[i]} at index ${i}`,
          "the weights are corrupt",
        );
      }
    }
  }
  const names: Record<string, string> = {
    F32: "float32",
    F16: "float16",
    BF16: "bfloat16",
    F64: "float64",
  };
  const found = `Hugging Face snapshot ${dir} (${file.split("/").pop()}, ${
    [...dtypes].map((d) => names[d] ?? d).join("+")
  }${dtypes.has("F32") && dtypes.size === 1 ? "" : " read as float32"}, ${weights.size} tensors${
    skipped ? `, ${skipped} metric counters skipped` : ""
  })`;
  const shapes = new Map(decls.map((d) => [d.name, d.shape])); // checked against the file above
  return {
    dir,
    weights,
    optimizer: new Map(),
    shapes: { weights: shapes, optimizer: new Map() },
    state: {
      step: 0,
      source: "huggingface",
      config: {
        model: { config: mapped.modelConfig },
        datamodule: { max_length: mapped.maxLength },
      },
    },
    found,
  };
}

const EMB = "transformer.embeddings.word_embeddings.weight";

function checkShape(file: string, key: string, got: readonly number[], want: readonly number[]) {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new BasedError(
      `${file}: tensor '${key}' has shape [${got.join(",")}], the model config.json describes ` +
        `needs [${want.join(",")}]`,
      "config.json and the weights are from different models",
    );
  }
}
