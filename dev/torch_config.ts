/**
 * Lab: the resolved model config of an experiment, or of the fixtures' tiny model, as JSON for
 * dev/torch_based.py: the typed config (model/config.ts) the trainer builds from, the batch, the
 * optimizer settings, and every parameter's state-dict name, shape and optimizer group
 * (model/params.ts, optim/groups.ts), so the PyTorch model can check its names against ours.
 *
 *   deno run -A dev/torch_config.ts experiment=example/based-360m [overrides...] > 360m.json
 *   deno run -A dev/torch_config.ts --manifest FIXTURES/manifest.json > fixture.json
 */
import { composeConfig } from "../configs/mod.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { declareParams } from "../model/params.ts";
import { paramGroup } from "../optim/groups.ts";

type Obj = Record<string, unknown>;

function resolved(
  source: string,
  modelCfg: Obj,
  batch: number,
  seqLen: number,
  grouping: Obj | null,
  optimizer: Obj,
) {
  const mc = modelConfigFromCfg(modelCfg, seqLen);
  return {
    source,
    batch,
    seq_len: seqLen,
    // the same workload string as `based bench --only step` (bench/mod.ts)
    workload: `${source} B${batch}x${seqLen}`,
    optimizer: {
      lr: Number(optimizer.lr ?? 8e-4),
      betas: (optimizer.betas as number[] | undefined) ?? [0.9, 0.95],
      eps: Number(optimizer.eps ?? 1e-8),
      weight_decay: Number(optimizer.weight_decay ?? 0.1),
    },
    model: {
      ...mc,
      // JSON has no Infinity: full causal attention (mha) is window null
      layers: mc.layers.map((l) => ({ ...l, window: Number.isFinite(l.window) ? l.window : null })),
    },
    params: declareParams(mc).map((d) => ({
      name: d.name,
      shape: d.shape,
      kind: d.kind,
      group: paramGroup(d.name, d.kind, grouping),
    })),
  };
}

const args = [...Deno.args];
let out;
if (args[0] === "--manifest") {
  const m = JSON.parse(await Deno.readTextFile(args[1])) as { info: { model: Obj } };
  const info = m.info.model;
  const yaml = info.config_yaml_keys as { model: { config: Obj } };
  // the fixtures' optimizer (their README): AdamW lr 1e-3, betas (0.9, 0.95), wd 0.1; the
  // reference's default grouping (no decay for the embedding and biases)
  out = resolved("fixtures", yaml.model.config, Number(info.batch), Number(info.seq_len), {}, {
    lr: 1e-3,
    weight_decay: 0.1,
  });
} else {
  const cfg = composeConfig([...args, "trainer.devices=1"]) as Record<string, Obj>;
  const experiment = args.find((a) => a.startsWith("experiment="))?.slice(11) ?? "default";
  const train = cfg.train as Obj;
  out = resolved(
    experiment,
    cfg.model.config as Obj,
    Number(cfg.datamodule.batch_size),
    Number(cfg.datamodule.max_length),
    (train.optimizer_param_grouping as Obj | undefined) ?? null,
    (train.optimizer as Obj | undefined) ?? {},
  );
}
console.log(JSON.stringify(out, null, 1));
