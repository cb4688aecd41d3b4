/**
 * Where the commands meet Hugging Face snapshots: the one line that says what
 * `--checkpoint` / `init_from` found, the eval config of a snapshot (which
 * carries no data config), and `+init_from=DIR` for `based train`.
 */
import { applyOverrides, cfgGet, type Config } from "../config/mod.ts";
import { composeConfig } from "../configs/mod.ts";
import { BasedError } from "../errors.ts";
import type { LoadedCheckpoint } from "../train/checkpoint.ts";
import { checkSequenceLength } from "../train/preflight.ts";
import { modelConfigFromCfg } from "../model/config.ts";

type Obj = Record<string, unknown>;

export function isHfCheckpoint(ck: LoadedCheckpoint): boolean {
  return ck.state.source === "huggingface";
}

/** One line: which kind of checkpoint `--checkpoint` / `init_from` found. */
export function describeCheckpoint(ck: LoadedCheckpoint): string {
  const found = (ck as { found?: string }).found;
  return found ?? `based checkpoint ${ck.dir} (step ${ck.state.step})`;
}

/**
 * The config `based eval` runs with: a based checkpoint's own config with the
 * overrides applied; for a snapshot, the overrides composed like `based
 * train`'s (so `datamodule=kjv` selects the group) with the snapshot's model.
 */
export function evalConfig(ck: LoadedCheckpoint, overrides: string[]): Config {
  const own = ck.state.config as Config;
  if (!isHfCheckpoint(ck)) return applyOverrides(own, overrides);
  const c = composeConfig(overrides) as Obj;
  const dm = c.datamodule as Obj | undefined;
  if (!dm || typeof dm !== "object") {
    throw new BasedError(
      `${ck.dir} is a Hugging Face snapshot: it carries no data config`,
      "choose the data, e.g. datamodule=wikitext103 or datamodule=kjv",
    );
  }
  const mc = (own.model as Obj).config as Obj;
  checkSequenceLength(modelConfigFromCfg(mc), Number(dm.max_length));
  return { ...c, model: { config: mc } } as Config;
}

/**
 * `+init_from=DIR` (a Hugging Face snapshot or a based checkpoint): the config
 * with the model config of DIR, and DIR's weights to start from (fresh
 * optimizer, step 0). Null without the key.
 */
export async function initFrom(
  cfg: Config,
  load: (path: string) => Promise<LoadedCheckpoint>,
  log: (s: string) => void,
): Promise<{ cfg: Config; weights: Map<string, Float32Array> } | null> {
  const from = cfgGet<unknown>(cfg, "init_from", undefined);
  if (from === undefined || from === null || from === "") return null;
  if (typeof from !== "string") {
    throw new BasedError(`init_from must be a directory, got ${JSON.stringify(from)}`);
  }
  const ck = await load(from);
  const mc = ((ck.state.config as Obj | undefined)?.model as Obj | undefined)?.config;
  if (!mc) throw new BasedError(`${ck.dir}: no model config to fine-tune from`);
  log(
    `init_from: ${describeCheckpoint(ck)}: its weights and model config; fresh optimizer, step 0`,
  );
  return {
    cfg: { ...cfg, model: { ...(cfg.model as Obj), config: mc } } as unknown as Config,
    weights: ck.weights,
  };
}
