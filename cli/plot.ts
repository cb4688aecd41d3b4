/** `based plot RUN_DIR`: regenerate a run's SVG plots. */
import type { Command } from "commander";
import { subcommand } from "./options.ts";

export function plotCommand(program: Command): void {
  subcommand(program, "plot")
    .description("regenerate the SVG plots (loss, perplexity) of a run directory")
    .argument("<run_dir>", "a training run directory (holds metrics.jsonl)")
    .action(async (dir: string) => {
      const { writePlots } = await import("../train/metrics.ts");
      for (const p of await writePlots(dir)) console.log(`wrote ${p}`);
    });
}
