/** `based export --hf DIR --checkpoint CKPT`: a checkpoint in the released models' layout (hf/). */
import type { Command } from "commander";
import { subcommand } from "./options.ts";

export function exportCommand(program: Command): void {
  subcommand(program, "export")
    .description(
      "write a checkpoint in the released models' Hugging Face layout (config.json, " +
        "model.safetensors with PyTorch's state_dict names), which the reference loads",
    )
    .requiredOption("--hf <dir>", "output folder (new or empty)")
    .requiredOption(
      "--checkpoint <dir>",
      "a checkpoint (step_*), a checkpoint directory (newest) or a Hugging Face snapshot",
    )
    .action(async (opts: { hf: string; checkpoint: string }) => {
      const { exportHf } = await import("../hf/export.ts");
      await exportHf(opts.checkpoint, opts.hf);
    });
}
