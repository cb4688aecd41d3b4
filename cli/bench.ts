/** `based bench`: benchmarks with the limit each is compared with. */
import type { Command } from "commander";
import { choices, int, intList, oneOf, PRECISIONS, subcommand } from "./options.ts";

const BENCHES = [
  "copy",
  "peak",
  "matmul",
  "attention",
  "bandwidth",
  "optim",
  "step",
  "generate",
] as const;

export function benchCommand(program: Command): void {
  subcommand(program, "bench")
    .description("benchmarks: measured figure, the limit it is compared with, and the ratio")
    .option(`--only <names>`, `comma-separated subset: ${BENCHES.join(",")}`, choices(BENCHES))
    .option("--quick", "small sizes (CPU adapters)")
    .option("--out <dir>", "write bench.json (and plots) into this directory")
    .option("--tune", "autotune matmul tile configs for this adapter first (cached per adapter)")
    .option("--batch <n>", "batch size of the training-step benchmark (an integer ≥ 1)", int(1))
    .option(
      "--lengths <list>",
      "sequence lengths of the attention benchmark (integers ≥ 1)",
      intList(1),
    )
    .option(
      "--profile",
      "print the time per kernel kind and class of one training step, each class against its measured limit",
    )
    .option(
      "--filter <text>",
      "only matmul shapes (with --tune too) and step views whose name contains this",
    )
    .option(
      "--precision <p>",
      `precision of the matmul and step benchmarks: ${PRECISIONS.join(", ")} (default 32)`,
      oneOf(PRECISIONS),
    )
    .option(
      "--anchors <files>",
      "PyTorch figures of this machine, comma-separated JSON files (dev/torch_matmul.py, dev/torch_based.py)",
    )
    .action(async (opts: import("../bench/mod.ts").BenchOptions) => {
      const { runBench } = await import("../bench/mod.ts");
      await runBench(opts);
    });
}
