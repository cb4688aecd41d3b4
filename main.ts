/**
 * based — a Deno-native trainer for Based linear-attention language models.
 *   based train experiment=example/based-360m trainer.devices=1
 *   based info | bench | parity DIR | eval | generate | export | plot RUN_DIR
 *
 * A thin dispatcher: each command (its options, their parsing and checks) is
 * one module under cli/.
 */
import { Command, CommanderError } from "commander";
import { BasedError } from "./errors.ts";
import { oneLineErrors } from "./cli/options.ts";
import { infoCommand } from "./cli/info.ts";
import { trainCommand } from "./cli/train.ts";
import { evalCommand } from "./cli/eval.ts";
import { generateCommand } from "./cli/generate.ts";
import { exportCommand } from "./cli/export.ts";
import { benchCommand } from "./cli/bench.ts";
import { parityCommand } from "./cli/parity.ts";
import { plotCommand } from "./cli/plot.ts";
import { demoCommand } from "./cli/demo.ts";

const program = new Command("based")
  .description("Deno-native trainer for Based linear-attention language models (WebGPU)")
  .exitOverride() // usage errors throw (one line printed, see cli/options.ts), caught below
  .configureOutput(oneLineErrors("based"));
for (
  const add of [
    infoCommand,
    trainCommand,
    demoCommand,
    evalCommand,
    generateCommand,
    exportCommand,
    benchCommand,
    parityCommand,
    plotCommand,
  ]
) add(program);

try {
  await program.parseAsync(Deno.args, { from: "user" });
  Deno.exit(0);
} catch (e) {
  if (e instanceof CommanderError) Deno.exit(e.exitCode); // already printed (or --help)
  if (e instanceof BasedError) {
    console.error(`error: ${e.message}`);
    Deno.exit(1);
  }
  throw e;
}
