/**
 * `based export --hf DIR --checkpoint CKPT`: a checkpoint in the released
 * models' Hugging Face layout, `config.json` (GPT2Config keyword arguments
 * with the mixer dicts) and `model.safetensors` holding PyTorch's state_dict
 * of the reference's GPTLMHeadModel: the same names, shapes and order, float32,
 * and `lm_head.weight` (tied: the embedding's values), so that
 * `model.load_state_dict(safetensors.torch.load_file(...), strict=True)` of
 * the reference takes it, and `based eval --checkpoint DIR` reads it back.
 * With `bin`, also `pytorch_model.bin` (torch.save format, hf/torch_save.ts):
 * the file the reference's `GPTLMHeadModel.from_pretrained_hf` loads.
 */
import { join } from "node:path";
import { BasedError } from "../errors.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { declareParams } from "../model/params.ts";
import { serializeSafetensors, type TensorToWrite } from "../tensor/safetensors.ts";
import { findCheckpoint } from "../train/restore.ts";
import { hfConfigJson, mapHfConfig } from "./config_map.ts";
import { EMBEDDING_NAME, LM_HEAD } from "./tied.ts";
import { writeTorchFile } from "./torch_save.ts";

type Obj = Record<string, unknown>;

export async function exportHf(
  checkpoint: string,
  outDir: string,
  log: (s: string) => void = console.log,
  opts: { bin?: boolean } = {},
): Promise<void> {
  const ck = await findCheckpoint(checkpoint, log);
  const mc = ((ck.state.config as Obj | undefined)?.model as Obj | undefined)?.config as
    | Obj
    | undefined;
  if (!mc) throw new BasedError(`${ck.dir}: no model config in its state.json`);
  const json = hfConfigJson(mc);
  mapHfConfig(json, `${ck.dir} (model config)`); // what we write, we read back
  const config = modelConfigFromCfg(mc);
  const tensors: TensorToWrite[] = [];
  for (const d of declareParams(config)) {
    const data = ck.weights.get(d.name);
    if (!data) throw new BasedError(`${ck.dir} has no tensor '${d.name}'`);
    tensors.push({ name: d.name, shape: d.shape, data });
  }
  const emb = tensors.find((t) => t.name === EMBEDDING_NAME)!;
  tensors.push({ name: LM_HEAD, shape: emb.shape, data: emb.data });
  for (const f of ["config.json", "model.safetensors", "pytorch_model.bin"]) {
    if (await Deno.stat(join(outDir, f)).then(() => true, () => false)) {
      throw new BasedError(`${join(outDir, f)} exists`, "export into an empty or new folder");
    }
  }
  try {
    await Deno.mkdir(outDir, { recursive: true });
    const write = async (name: string, bytes: Uint8Array) => {
      const tmp = join(outDir, `.${name}.tmp-${Deno.pid}`);
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, join(outDir, name));
    };
    await write(
      "model.safetensors",
      serializeSafetensors(tensors, { format: "pt", source: "based" }),
    );
    if (opts.bin) {
      // what the reference's from_pretrained_hf reads; lm_head.weight is the embedding's storage
      const tmp = join(outDir, `.pytorch_model.bin.tmp-${Deno.pid}`);
      await writeTorchFile(
        tmp,
        tensors.map((t) => ({
          name: t.name,
          shape: t.shape,
          data: t.data as Float32Array,
          tiedTo: t.name === LM_HEAD ? EMBEDDING_NAME : undefined,
        })),
      );
      await Deno.rename(tmp, join(outDir, "pytorch_model.bin"));
    }
    await write("config.json", new TextEncoder().encode(JSON.stringify(json, null, 2) + "\n"));
  } catch (e) {
    if (e instanceof BasedError) throw e;
    throw new BasedError(
      `cannot write ${outDir} (${(e as Error).message.split("\n")[0]})`,
      "choose a writable folder with free space",
    );
  }
  log(
    `exported ${ck.dir} (step ${ck.state.step}) to ${outDir}: config.json, model.safetensors` +
      `${opts.bin ? ", pytorch_model.bin" : ""} ` +
      `(${tensors.length} tensors with ${LM_HEAD}, float32)`,
  );
}
