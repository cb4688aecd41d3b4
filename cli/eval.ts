/** `based eval`: validation and test loss / perplexity of a checkpoint. */
import type { Command } from "commander";
import { choices, int, oneOf, PRECISIONS, subcommand } from "./options.ts";

const SPLITS = ["train", "validation", "test"] as const;
type Split = typeof SPLITS[number];

interface EvalOptions {
  checkpoint: string;
  split: Split[];
  limit?: number;
  precision?: string;
}

export function evalCommand(program: Command): void {
  subcommand(program, "eval")
    .description("validation and test loss / perplexity of a checkpoint")
    .requiredOption(
      "--checkpoint <dir>",
      "a checkpoint (step_*) or a checkpoint directory (newest)",
    )
    .option(
      "--split <names>",
      "splits to evaluate (train, validation, test)",
      choices(SPLITS),
      ["validation", "test"],
    )
    .option("--limit <n>", "at most this many batches per split (an integer ≥ 1)", int(1))
    .option(
      "--precision <p>",
      `${PRECISIONS.join(", ")} (default: the checkpoint's trainer.precision)`,
      oneOf(PRECISIONS),
    )
    .argument("[overrides...]", "datamodule overrides, e.g. datamodule.batch_size_eval=8")
    .action(runEval);
}

async function runEval(overrides: string[], opts: EvalOptions): Promise<void> {
  const { initEngine } = await import("../tensor/engine.ts");
  const { BasedError } = await import("../errors.ts");
  const { findCheckpoint, modelFromCheckpoint } = await import("../train/restore.ts");
  const { evaluate } = await import("../train/loop.ts");
  const { loadDataModule } = await import("../data/datamodule.ts");
  const { cfgGet, cfgInt } = await import("../config/mod.ts");
  const { describeCheckpoint, evalConfig } = await import("../hf/hooks.ts");
  const e = await initEngine();
  const ck = await findCheckpoint(opts.checkpoint); // ours or a Hugging Face snapshot (hf/)
  const c = evalConfig(ck, overrides);
  const { model } = modelFromCheckpoint(e, ck);
  // --precision, else what the run ran (its checkpoint's trainer.precision)
  const { evalPrecision } = await import("../train/amp.ts");
  const prec = evalPrecision(
    e,
    opts.precision ?? cfgGet(c, "trainer.precision", "32"),
    console.log,
  );
  const L = cfgInt(c, "datamodule.max_length");
  const bs = cfgInt(c, "datamodule.batch_size_eval", cfgInt(c, "datamodule.batch_size"));
  for (
    const [k, v] of [["datamodule.batch_size_eval", bs], ["datamodule.max_length", L]] as const
  ) {
    if (v < 1) throw new BasedError(`${k} must be ≥ 1, got ${v}`);
  }
  const dm = await loadDataModule(
    (c as Record<string, Record<string, unknown>>).datamodule,
    { cwd: Deno.cwd(), log: console.log, splits: opts.split },
  );
  console.log(
    `checkpoint: ${describeCheckpoint(ck)} on ${e.info.name}, precision ${prec.precision}`,
  );
  for (const split of opts.split) {
    const ds = split === "test" ? dm.test : split === "train" ? dm.train : dm.validation;
    const r = await evaluate(e, model, ds, { batchSize: bs, seqLen: L, limitBatches: opts.limit });
    if (r.tokens === 0) {
      throw new BasedError(
        `the ${split} split holds no sequence of ${L} tokens: nothing to evaluate`,
        "lower datamodule.max_length or choose another split with --split",
      );
    }
    console.log(
      `${split}: loss ${r.loss.toFixed(6)} | ppl ${r.ppl.toFixed(3)} | ${r.tokens} tokens`,
    );
  }
}
