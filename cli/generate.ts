/** `based generate`: continue a prompt with a trained checkpoint. */
import type { Command } from "commander";
import { int, num, subcommand } from "./options.ts";

interface GenerateCliOptions {
  checkpoint: string;
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  /** false with --no-stop */
  stop: boolean;
}

export function generateCommand(program: Command): void {
  subcommand(program, "generate")
    .description("continue a prompt with a trained checkpoint")
    .requiredOption(
      "--checkpoint <dir>",
      "a checkpoint (step_*) or a checkpoint directory (newest)",
    )
    .option("--prompt <text>", "the prompt", "In the beginning")
    .option("--max-new-tokens <n>", "tokens to generate (an integer ≥ 1)", int(1), 50)
    .option("--temperature <t>", "sampling temperature ≥ 0 (0 = greedy)", num(0), 0)
    .option("--top-k <k>", "sample among the k most likely (0 = all)", int(0), 0)
    .option(
      "--top-p <p>",
      "sample among the most likely tokens of mass p (0 < p ≤ 1)",
      num(0, 1, true),
      1,
    )
    .option("--seed <n>", "sampling seed (an integer ≥ 0)", int(0), 0)
    .option("--no-stop", "go on after the end-of-text token")
    .action(runGenerate);
}

async function runGenerate(opts: GenerateCliOptions): Promise<void> {
  const { initEngine } = await import("../tensor/engine.ts");
  const { findCheckpoint, modelFromCheckpoint } = await import("../train/restore.ts");
  const { generate } = await import("../train/generate.ts");
  const e = await initEngine();
  const { model } = modelFromCheckpoint(e, await findCheckpoint(opts.checkpoint));
  const enc = new TextEncoder();
  Deno.stdout.writeSync(enc.encode(opts.prompt));
  await generate(e, model, {
    prompt: opts.prompt,
    maxNewTokens: opts.maxNewTokens,
    temperature: opts.temperature,
    topK: opts.topK,
    topP: opts.topP,
    seed: opts.seed,
    context: model.config.maxLength,
    stopAtEos: opts.stop,
    onToken: (t) => Deno.stdout.writeSync(enc.encode(t)),
  });
  console.log();
}
