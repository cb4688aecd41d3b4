/**
 * based — a Deno-native trainer for Based linear-attention language models.
 *   based train experiment=example/based-360m trainer.devices=1
 *   based info | bench | parity DIR | eval | generate | plot RUN_DIR
 */
import { Command } from "commander";
import { BasedError } from "./tensor/errors.ts";
import { initEngine } from "./tensor/engine.ts";
import { formatBytes } from "./tensor/errors.ts";

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
    console.log(`backend:   ${i.backend} (DENO_WEBGPU_BACKEND)`);
    console.log(`features:  ${i.features.join(", ")}`);
    console.log("limits:");
    for (const [k, v] of Object.entries(i.limits)) {
      const pretty = /Size$/.test(k) && v >= 1024 ? `${v} (${formatBytes(v)})` : `${v}`;
      console.log(`  ${k.padEnd(42)} ${pretty}`);
    }
  });

program.command("bench")
  .description("benchmarks: measured figure, the limit it is compared with, and the ratio")
  .option("--only <names>", "comma-separated subset: copy,matmul,attention,optim,step")
  .option("--quick", "small sizes (CPU adapters)")
  .option("--out <dir>", "write bench.json (and plots) into this directory")
  .action(async (opts: { only?: string; quick?: boolean; out?: string }) => {
    const { runBench } = await import("./bench/mod.ts");
    await runBench(opts);
  });

program.command("parity")
  .description("compare against reference fixtures (a folder with manifest.json + safetensors)")
  .argument("<dir>", "fixture folder")
  .option("--view <views>", "linear-attention views to run (comma-separated)", "quadratic,chunked,cumsum")
  .option("--filter <text>", "only cases whose name contains this")
  .action(async (dir: string, opts: { view: string; filter?: string }) => {
    const { runParity } = await import("./model/parity.ts");
    const { resolveView } = await import("./kernels/linear_attention.ts");
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
