/** The YAML tree: bundle completeness, every experiment composes, malformed YAML, accessors. */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { parse } from "yaml";
import {
  cfgBool,
  cfgGet,
  cfgInt,
  cfgList,
  cfgMap,
  cfgNum,
  cfgStr,
  closestKey,
  dirSource,
  dirSourceSync,
  mapSource,
  parseYaml,
  toYaml,
} from "../../config/mod.ts";
import { BUNDLE } from "../../configs/bundle.ts";
import { bundleText, CONFIGS_DIR, listYaml } from "../../configs/gen_bundle.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { BasedError } from "../../errors.ts";
import { at, compose, composeFrom, CWD, throwsBased } from "../config/helpers.ts";

Deno.test("config/files: configs/bundle.ts holds every YAML file under configs/, up to date", () => {
  const files = listYaml();
  eq(Object.keys(BUNDLE).sort(), files);
  for (const f of files) eq(BUNDLE[f], Deno.readTextFileSync(`${CONFIGS_DIR}/${f}`), f);
  eq(Deno.readTextFileSync(`${CONFIGS_DIR}/bundle.ts`), bundleText(files));
});

Deno.test("config/files: every YAML file parses; no machine-specific absolute paths", () => {
  for (const [f, text] of Object.entries(BUNDLE)) {
    parseYaml(text, f);
    ok(!/\/(var|home|mnt|scratch|data\d|Users)\//.test(text), `${f} has a machine-specific path`);
  }
});

const EXPERIMENTS = Object.keys(BUNDLE)
  .filter((f) => f.startsWith("experiment/") && !f.startsWith("experiment/pile/"))
  .map((f) => f.slice("experiment/".length).replace(/\.yaml$/, ""));

Deno.test("config/files: every experiment composes, round-trips through YAML and builds a model config", () => {
  ok(EXPERIMENTS.includes("reference/based-1b") && EXPERIMENTS.includes("reference/attn-360m"));
  for (const x of EXPERIMENTS) {
    for (const devices of [1, 8]) {
      const cfg = compose([`experiment=${x}`, `trainer.devices=${devices}`]);
      eq(parse(toYaml(cfg)), cfg, x);
      const acc = cfgInt(cfg, "trainer.accumulate_grad_batches");
      eq(
        acc,
        Math.ceil(
          cfgInt(cfg, "train.global_batch_size") / (devices * cfgInt(cfg, "datamodule.batch_size")),
        ),
      );
      const mc = modelConfigFromCfg(
        cfgMap(cfg, "model.config"),
        cfgInt(cfg, "datamodule.max_length"),
      );
      eq(mc.nLayer, cfgInt(cfg, "model.config.n_layer"), x);
    }
  }
  // the pile experiments (base, gpt3s/m) compose too, with the GPU-memory formulas
  eq(at(compose(["experiment=pile/gpt3s-flash"]), "datamodule.batch_size"), 32);
  eq(at(compose(["experiment=pile/gpt3m-flash"]), "datamodule.batch_size"), 16);
  eq(at(compose(["experiment=pile/base"]), "train.scheduler.warmup_t"), 8000);
  eq(at(compose(["experiment=pile/base"]), "train.scheduler.lr_min"), 0.1 * 6e-4);
  // no experiment: the bare defaults compose (as in the reference)
  eq(at(compose([]), "train.optimizer._target_"), "torch.optim.AdamW");
});

Deno.test("config/files: the reference runs' differences (the reference repository's experiment files)", () => {
  const r = compose(["experiment=reference/based-360m"]);
  eq(at(r, "model.config.alt_mixer.parallel_implementation"), "fla_parallel");
  eq(at(r, "model.config.alt_mixer.eps"), 1e-6);
  eq(at(r, "model.config.alt_mixer_2.window_size"), 256);
  eq(at(r, "model.config.fused_bias_fc"), true);
  eq(at(r, "model.config.fused_dropout_add_ln"), true);
  eq(at(r, "resume"), false);
  eq(at(r, "datamodule._target_"), "train.datamodules.language_modeling_neox.NeoxLMDataModule");
  eq(at(r, "datamodule.dataset_name"), "the_pile");
  eq(at(r, "datamodule.num_test_samples"), 1000);
  eq(at(r, "datamodule.global_batch_size"), 256);
  const b = compose(["experiment=reference/based-1b"]);
  eq(at(b, "model.config.n_embd"), 1792);
  eq(at(b, "model.config.n_layer"), 36);
  eq(at(b, "model.config.alt_mixer_layers"), [1, 6, 11, 16, 21, 27, 33]);
  eq(at(b, "model.config.n_inner"), 3584);
  eq(at(b, "trainer.accumulate_grad_batches"), 8);
  const a = compose(["experiment=reference/attn-360m"]);
  eq(at(a, "model.config.n_layer"), 24);
  eq(at(a, "model.config.rotary_emb_fraction"), 0.5);
  eq(at(a, "model.config.mixer"), undefined);
  eq(
    modelConfigFromCfg(cfgMap(a, "model.config"), 2048).layers.every((l) => l.kind === "mha"),
    true,
  );
});

Deno.test("config/files: based-tiny is the demo described in the brief", () => {
  const cfg = compose(["experiment=example/based-tiny"]);
  const mc = modelConfigFromCfg(cfgMap(cfg, "model.config"), cfgInt(cfg, "datamodule.max_length"));
  eq(mc.layers.map((l) => l.kind), ["conv", "linear", "slide", "conv", "linear", "slide"]);
  eq(mc.vocabPadded, 50264);
  eq(mc.nEmbd, 128);
  eq(mc.layers[1].featureDim, 16);
  eq(mc.layers[1].numHeads, 4);
  eq(mc.layers[2].window, 64);
  eq(cfgStr(cfg, "datamodule.dataset_name"), "kjv");
  eq(cfgStr(cfg, "datamodule.cache_dir"), `${CWD}/.cache/kjv/cache`);
  eq(cfgInt(cfg, "datamodule.max_length"), 128);
  eq(cfgInt(cfg, "datamodule.batch_size"), 4);
  eq(cfgNum(cfg, "train.optimizer.lr"), 3e-3);
  eq(cfgInt(cfg, "train.scheduler.warmup_t"), 6);
  eq(cfgNum(cfg, "train.scheduler.lr_min"), 3e-4);
  eq(cfgInt(cfg, "train.scheduler.t_initial"), 54);
  eq(cfgInt(cfg, "trainer.max_steps"), 60);
  eq(cfgInt(cfg, "trainer.accumulate_grad_batches"), 1);
  eq(cfgInt(cfg, "trainer.val_check_interval"), 20);
  eq(cfgInt(cfg, "trainer.limit_val_batches"), 4);
  eq(cfgInt(cfg, "callbacks.model_checkpoint.every_n_train_steps"), 20);
  eq(cfgStr(cfg, "callbacks.model_checkpoint.dirpath"), "checkpoints/based-tiny");
  eq(cfgInt(cfg, "seed"), 1111);
  eq(cfgBool(cfg, "resume"), false);
  // the parameter count is a few million (most of it the tied embedding)
  const params = 50264 * 128 + 6 * (2 * 128 + 128 * 512 + 256 * 128) +
    2 * (128 * 512 + 512 + 256 * 3 + 256 * 128 + 128) + 2 * (2 * 128 * 64 + 2 * 128 * 128) +
    2 * (128 * 384 + 128 * 128) + 128;
  ok(params > 2e6 && params < 1e7, String(params));
});

Deno.test("config/files: malformed YAML names the file and line", () => {
  throwsBased(
    () => composeFrom({ "config.yaml": "a: 1\nb: [1, 2\nc: 3\n" }),
    /^malformed YAML in test\/config.yaml:3:1: /,
  );
  throwsBased(
    () => composeFrom({ "config.yaml": "a: 1\na: 2\n" }),
    /test\/config.yaml:2:1: Map keys must be unique/,
  );
  throwsBased(() => composeFrom({ "config.yaml": "- 1\n- 2\n" }), /must be a mapping/);
  throwsBased(() => composeFrom({ "config.yaml": "defaults: 3\n" }), /'defaults' must be a list/);
  throwsBased(
    () => composeFrom({ "config.yaml": "x: !!binary aGVsbG8=\n" }),
    /unsupported YAML value at 'x'/,
  );
  throwsBased(
    () => composeFrom({ "config.yaml": "a: *nope\n" }),
    /malformed YAML in test\/config.yaml/,
  );
  eq(composeFrom({ "config.yaml": "" }), {});
  eq(composeFrom({ "config.yaml": "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n" }), {
    base: { x: 1, y: 2 },
    d: { x: 1, y: 3 },
  });
});

Deno.test("config/files: a user config directory (dirSource)", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/experiment/mine`, { recursive: true });
    Deno.writeTextFileSync(
      `${dir}/experiment/mine/small.yaml`,
      "# @package _global_\ndefaults:\n  - /experiment/example/based-tiny.yaml\ntrainer:\n  max_steps: 5\n",
    );
    for (const src of [await dirSource(dir), dirSourceSync(dir)]) {
      const cfg = compose(["experiment=mine/small"], { extraSources: [src] });
      eq(cfgInt(cfg, "trainer.max_steps"), 5);
      eq(cfgInt(cfg, "model.config.n_embd"), 128);
    }
    await throwsBasedAsync(() => dirSource(`${dir}/nope`), /cannot read config directory/);
    throwsBased(() => dirSourceSync(`${dir}/nope`), /cannot read config directory/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

async function throwsBasedAsync(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    ok(e instanceof BasedError && re.test(e.message), String(e));
    return;
  }
  throw new Error("expected a BasedError");
}

Deno.test("config/files: typed accessors and closestKey", () => {
  const cfg = compose(["experiment=example/based-360m"]);
  eq(cfgGet(cfg, "model.config.alt_mixer_layers.2"), 11);
  eq(cfgGet(cfg, "nope.nope", 5), 5);
  eq(cfgList(cfg, "train.optimizer.betas"), [0.9, 0.95]);
  eq(cfgInt(cfg, "trainer.check_val_every_n_epoch", 1), 1); // null -> default
  eq(cfgBool(cfg, "do_test"), true);
  eq(cfgStr(cfg, "name"), "02-20-based-360m");
  throwsBased(
    () => cfgInt(cfg, "trainer.max_step"),
    /^missing config key 'trainer.max_step' \(did you mean 'trainer.max_steps'\?\)$/,
  );
  throwsBased(() => cfgInt(cfg, "train.optimizer.lr"), /must be an integer, got 0.0008 \(float\)/);
  throwsBased(() => cfgNum(cfg, "name"), /must be a number, got '02-20-based-360m' \(string\)/);
  throwsBased(() => cfgBool(cfg, "seed"), /must be true or false/);
  throwsBased(() => cfgStr(cfg, "trainer.strategy"), /'trainer.strategy' is null/);
  throwsBased(() => cfgList(cfg, "name"), /must be a list/);
  eq(
    closestKey("trainer.max_step", ["trainer.max_steps", "trainer.min_epochs"]),
    "trainer.max_steps",
  );
  eq(closestKey("zzz", ["trainer.max_steps"]), undefined);
  eq(closestKey("x", []), undefined);
  ok(mapSource({}).files.size === 0);
});
