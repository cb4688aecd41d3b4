/** Loading a trained model back from a checkpoint directory (for eval and generate). */
import { join } from "node:path";
import type { Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import { BasedLM } from "../model/based.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { latestCheckpoint, loadCheckpoint, type LoadedCheckpoint, MARKER } from "./checkpoint.ts";
import type { Config } from "../config/mod.ts";

/** `path` is a checkpoint (holds COMPLETE) or a directory of checkpoints (the newest is taken). */
export async function findCheckpoint(
  path: string,
  log: (s: string) => void = console.log,
): Promise<LoadedCheckpoint> {
  try {
    await Deno.stat(join(path, MARKER));
    return await loadCheckpoint(path);
  } catch (e) {
    if (e instanceof BasedError) throw e;
  }
  const ck = await latestCheckpoint(path, log);
  if (!ck) {
    throw new BasedError(
      `no complete checkpoint in ${path}`,
      "give a step_* directory or the callbacks.model_checkpoint.dirpath of a run",
    );
  }
  return ck;
}

export function modelFromCheckpoint(
  e: Engine,
  ck: LoadedCheckpoint,
): { model: BasedLM; cfg: Config } {
  const cfg = ck.state.config as Config | undefined;
  const mc = (cfg as Record<string, Record<string, unknown>> | undefined)?.model?.config as
    | Record<string, unknown>
    | undefined;
  if (!mc) throw new BasedError(`${ck.dir}/state.json has no model config`);
  const maxLength = Number(
    ((cfg as Record<string, Record<string, unknown>>).datamodule?.max_length) ?? 2048,
  );
  const config = modelConfigFromCfg(mc, maxLength);
  const model = BasedLM.create(e, config, { seed: 0, groupOf: () => "all", groupOrder: ["all"] });
  for (const p of model.store.params) {
    if (!ck.weights.has(p.name)) {
      throw new BasedError(
        `${ck.dir}/model.safetensors has no tensor '${p.name}'`,
        "the checkpoint is from another model",
      );
    }
  }
  model.store.load(ck.weights);
  return { model, cfg: cfg! };
}
