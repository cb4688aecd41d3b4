/** `based info`: the GPU adapter WebGPU found. */
import type { Command } from "commander";
import { subcommand } from "./options.ts";

export function infoCommand(program: Command): void {
  subcommand(program, "info")
    .description("print the GPU adapter: name, backend, features and limits")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const { initEngine } = await import("../tensor/engine.ts");
      const { formatBytes } = await import("../errors.ts");
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
}
