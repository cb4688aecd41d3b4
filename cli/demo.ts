/** `based demo` (`deno task demo`): based-tiny on the bundled corpus (train/demo.ts). */
import type { Command } from "commander";
import { loadConfig, subcommand } from "./options.ts";

export function demoCommand(program: Command): void {
  subcommand(program, "demo")
    .description(
      "trains based-tiny on the bundled corpus (60 steps; 20 on the GL software path, said)",
    )
    .argument("[overrides...]", "extra overrides, e.g. trainer.max_steps=200")
    .action(async (overrides: string[]) => {
      const { initEngine } = await import("../tensor/engine.ts");
      const { demoArgs } = await import("../train/demo.ts");
      const { train } = await import("../train/loop.ts");
      const e = await initEngine();
      const { args, note } = demoArgs(e.info, overrides);
      if (note) console.log(note);
      await train(await loadConfig(args), { engine: e });
    });
}
