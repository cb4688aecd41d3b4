/** `based train`: compose the config from the overrides and train. */
import type { Command } from "commander";
import { loadConfig, subcommand } from "./options.ts";

export function trainCommand(program: Command): void {
  subcommand(program, "train")
    .description("train a model: based train experiment=example/based-360m trainer.devices=1")
    .argument("[overrides...]", "key=value, +key=value, ~key, group=option (Hydra syntax)")
    .option("--cfg", "print the resolved config as YAML and exit")
    .option("--config-dir <dir>", "a directory of YAML configs searched before the built-in ones")
    .action(async (overrides: string[], opts: { cfg?: boolean; configDir?: string }) => {
      const cfg = await loadConfig(overrides, opts.configDir);
      if (opts.cfg) {
        const { toYaml } = await import("../config/mod.ts");
        console.log(toYaml(cfg));
        return;
      }
      // no experiment and no data settings (`based train` alone): name the experiments
      const { cfgGet } = await import("../config/mod.ts");
      if (cfgGet(cfg, "datamodule.max_length", null) === null) {
        await loadConfig(overrides, opts.configDir, ["experiment"]); // throws when none is chosen
      }
      const { train } = await import("../train/loop.ts");
      await train(cfg);
    });
}
