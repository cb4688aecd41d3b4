/**
 * based — a Deno-native trainer for Based linear-attention language models.
 *   based train experiment=example/based-360m trainer.devices=1
 *   based info | bench | parity DIR | eval | generate | plot RUN_DIR
 */
import { Command } from "commander";
import { BasedError } from "./errors.ts";
import { initEngine } from "./tensor/engine.ts";
import { formatBytes } from "./errors.ts";

const program = new Command("based")
  .description("Deno-native trainer for Based linear-attention language models (WebGPU)")
  .showHelpAfterError();

program.command("info")
  .description("print the GPU adapter: name, backend, features and limits")
  .option("--json", "print JSON")
  .action(async (opts: { json?: boolean }) => {
    const e = await initEngine();
    if (opts.json) {
      console.log(JSON.stringify(e.info, null, 2));
      return;
    }
    const i = e.info;
    console.log(`adapter:   ${i.name}${i.isFallback ? " (software fallback)" : ""}`);
    console.log(`vendor:    ${i.vendor} ${i.architecture}`.trimEnd());
    console.log(`backend:   ${i.backend} (${i.backendWhy})`);
    console.log(`features:  ${i.features.join(", ")}`);
    console.log("limits:");
    for (const [k, v] of Object.entries(i.limits)) {
      const pretty = /Size$/.test(k) && v >= 1024 ? `${v} (${formatBytes(v)})` : `${v}`;
      console.log(`  ${k.padEnd(42)} ${pretty}`);
    }
  });

program.command("train")
  .description("train a model: based train experiment=example/based-360m trainer.devices=1")
  .argument("[overrides...]", "key=value, +key=value, ~key, group=option (Hydra syntax)")
  .option("--cfg", "print the resolved config as YAML and exit")
  .option("--config-dir <dir>", "a directory of YAML configs searched before the built-in ones")
  .action(async (overrides: string[], opts: { cfg?: boolean; configDir?: string }) => {
    const { loadConfig } = await import("./train/cli.ts");
    const cfg = await loadConfig(overrides, opts.configDir);
    if (opts.cfg) {
      const { toYaml } = await import("./config/mod.ts");
      console.log(toYaml(cfg));
      return;
    }
    const { train } = await import("./train/loop.ts");
    await train(cfg);
  });

program.command("demo")
  .description(
    "trains based-tiny on the bundled corpus (60 steps; 20 on a CPU adapter through GL)",
  )
  .argument("[overrides...]", "extra overrides, e.g. trainer.max_steps=200")
  .action(async (overrides: string[]) => {
    const { demoArgs } = await import("./train/demo.ts");
    const { loadConfig } = await import("./train/cli.ts");
    const { train } = await import("./train/loop.ts");
    const e = await initEngine();
    const { args, note } = demoArgs(e.info.softwareGl, overrides);
    if (note) console.log(note);
    await train(await loadConfig(args));
  });

program.command("eval")
  .description("validation and test loss / perplexity of a checkpoint")
  .requiredOption("--checkpoint <dir>", "a checkpoint (step_*) or a checkpoint directory (newest)")
  .option("--split <names>", "splits to evaluate", "validation,test")
  .option("--limit <n>", "at most this many batches per split")
  .argument("[overrides...]", "datamodule overrides, e.g. datamodule.batch_size_eval=8")
  .action(
    async (overrides: string[], opts: { checkpoint: string; split: string; limit?: string }) => {
      const { findCheckpoint, modelFromCheckpoint } = await import("./train/restore.ts");
      const { evaluate } = await import("./train/loop.ts");
      const { loadDataModule } = await import("./data/datamodule.ts");
      const { applyOverrides } = await import("./config/mod.ts");
      const e = await initEngine();
      const ck = await findCheckpoint(opts.checkpoint);
      const { model, cfg } = modelFromCheckpoint(e, ck);
      const c = applyOverrides(cfg, overrides) as Record<string, Record<string, unknown>>;
      const splits = opts.split.split(",").map((x) =>
        x.trim()
      ) as ("train" | "validation" | "test")[];
      const dm = await loadDataModule(c.datamodule, { cwd: Deno.cwd(), log: console.log, splits });
      const L = Number(c.datamodule.max_length);
      const bs = Number(c.datamodule.batch_size_eval ?? c.datamodule.batch_size);
      console.log(`checkpoint ${ck.dir} (step ${ck.state.step}) on ${e.info.name}`);
      for (const split of opts.split.split(",")) {
        const ds = split === "test" ? dm.test : split === "train" ? dm.train : dm.validation;
        const r = await evaluate(e, model, ds, {
          batchSize: bs,
          seqLen: L,
          limitBatches: opts.limit ? Number(opts.limit) : undefined,
        });
        console.log(
          `${split}: loss ${r.loss.toFixed(6)} | ppl ${r.ppl.toFixed(3)} | ${r.tokens} tokens`,
        );
      }
    },
  );

program.command("generate")
  .description("continue a prompt with a trained checkpoint")
  .requiredOption("--checkpoint <dir>", "a checkpoint (step_*) or a checkpoint directory (newest)")
  .option("--prompt <text>", "the prompt", "In the beginning")
  .option("--max-new-tokens <n>", "tokens to generate", "50")
  .option("--temperature <t>", "0 = greedy", "0")
  .option("--top-k <k>", "sample among the k most likely (0 = all)", "0")
  .option("--seed <n>", "sampling seed", "0")
  .action(
    async (
      opts: {
        checkpoint: string;
        prompt: string;
        maxNewTokens: string;
        temperature: string;
        topK: string;
        seed: string;
      },
    ) => {
      const { findCheckpoint, modelFromCheckpoint } = await import("./train/restore.ts");
      const { generate } = await import("./train/generate.ts");
      const e = await initEngine();
      const { model } = modelFromCheckpoint(e, await findCheckpoint(opts.checkpoint));
      const enc = new TextEncoder();
      Deno.stdout.writeSync(enc.encode(opts.prompt));
      await generate(e, model, {
        prompt: opts.prompt,
        maxNewTokens: Number(opts.maxNewTokens),
        temperature: Number(opts.temperature),
        topK: Number(opts.topK),
        seed: Number(opts.seed),
        context: model.config.maxLength,
        stopAtEos: false,
        onToken: (t) => Deno.stdout.writeSync(enc.encode(t)),
      });
      console.log();
    },
  );

program.command("bench")
  .description("benchmarks: measured figure, the limit it is compared with, and the ratio")
  .option("--only <names>", "comma-separated subset: copy,matmul,attention,bandwidth,optim,step")
  .option("--quick", "small sizes (CPU adapters)")
  .option("--out <dir>", "write bench.json (and plots) into this directory")
  .option("--tune", "autotune matmul tile configs for this adapter first (cached per adapter)")
  .option("--batch <n>", "batch size of the training-step benchmark")
  .option("--lengths <list>", "sequence lengths of the attention benchmark")
  .option("--profile", "print the time per kernel kind of one training step")
  .option("--filter <text>", "only matmul shapes whose name contains this (with --tune too)")
  .action(
    async (
      opts: {
        only?: string;
        quick?: boolean;
        out?: string;
        tune?: boolean;
        batch?: string;
        lengths?: string;
        profile?: boolean;
      },
    ) => {
      const { runBench } = await import("./bench/mod.ts");
      await runBench(opts);
    },
  );

program.command("parity")
  .description("compare against reference fixtures (a folder with manifest.json + safetensors)")
  .argument("<dir>", "fixture folder")
  .option(
    "--view <views>",
    "linear-attention views to run (comma-separated)",
    "quadratic,chunked,cumsum",
  )
  .option("--filter <text>", "only cases whose name contains this")
  .action(async (dir: string, opts: { view: string; filter?: string }) => {
    const { runParity } = await import("./parity/parity.ts");
    const { resolveView } = await import("./kernels/linear_attention/mod.ts");
    const e = await initEngine();
    console.log(`parity: ${dir} on ${e.info.name}`);
    const views = [...new Set(opts.view.split(",").map((v) => resolveView(v.trim())))];
    const results = await runParity(e, dir, { views, filter: opts.filter });
    const passed = results.filter((r) => r.status === "pass").length;
    const failed = results.filter((r) => r.status === "fail").length;
    console.log(`${passed} passed, ${failed} failed`);
    if (failed) Deno.exit(1);
  });

program.command("plot")
  .description("regenerate the SVG plots (loss, perplexity) of a run directory")
  .argument("<run_dir>", "a training run directory (holds metrics.jsonl)")
  .action(async (dir: string) => {
    const { writePlots } = await import("./train/metrics.ts");
    for (const p of await writePlots(dir)) console.log(`wrote ${p}`);
  });

try {
  await program.parseAsync(Deno.args, { from: "user" });
  Deno.exit(0);
} catch (e) {
  if (e instanceof BasedError) {
    console.error(`error: ${e.message}`);
    Deno.exit(1);
  }
  throw e;
}
