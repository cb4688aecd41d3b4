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
    .option(
      "--bin",
      "also write pytorch_model.bin (torch.save format), which the reference's from_pretrained_hf reads",
    )
    .action(async (opts: { hf: string; checkpoint: string; bin?: boolean }) => {
      const { exportHf } = await import("../hf/export.ts");
      await exportHf(opts.checkpoint, opts.hf, console.log, { bin: opts.bin });
    });
}
