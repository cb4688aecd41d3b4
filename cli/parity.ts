/** `based parity DIR`: compare against reference fixtures. */
import type { Command } from "commander";
import { oneOf, PRECISIONS, subcommand } from "./options.ts";

export function parityCommand(program: Command): void {
  subcommand(program, "parity")
    .description("compare against reference fixtures (a folder with manifest.json + safetensors)")
    .argument("<dir>", "fixture folder")
    .option(
      "--view <views>",
      "linear-attention views to run (comma-separated)",
      "quadratic,chunked,cumsum",
    )
    .option("--filter <text>", "only cases whose name contains this")
    .option(
      "--precision <p>",
      `${PRECISIONS.join(", ")}: 16-mixed runs the model's cases in f16 mixed precision`,
      oneOf(PRECISIONS),
    )
    .action(async (dir: string, opts: { view: string; filter?: string; precision?: string }) => {
      const { initEngine } = await import("../tensor/engine.ts");
      const { runParity } = await import("../parity/parity.ts");
      const { resolveView } = await import("../kernels/linear_attention/mod.ts");
      const views = [...new Set(opts.view.split(",").map((v) => resolveView(v.trim())))];
      const { parsePrecision } = await import("../train/amp.ts");
      const p = parsePrecision(opts.precision ?? "32");
      if (p.note) console.log(p.note);
      const e = await initEngine();
      console.log(`parity: ${dir} on ${e.info.name}, precision ${p.precision}`);
      const results = await runParity(e, dir, {
        views,
        filter: opts.filter,
        precision: p.precision,
      });
      const passed = results.filter((r) => r.status === "pass").length;
      const failed = results.filter((r) => r.status === "fail").length;
      console.log(`${passed} passed, ${failed} failed`);
      if (failed) Deno.exit(1);
    });
}
