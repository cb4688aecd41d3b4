/**
 * Generation throughput (`based bench --only generate`): a parallel prefill of
 * a random prompt of P tokens per sequence, then N recurrent decode steps
 * (model/decode.ts) at batch 1 and 16, timed by the wall clock with one GPU
 * wait at the end of each phase (after a warm-up run that compiles the
 * pipelines). Decode steps feed a fixed token (no host readback or sampling
 * between steps), so the figure is the engine's, not the sampler's.
 *
 * Decode is memory-bound: each step reads every weight once (the tied
 * embedding once, for the LM head) plus each sequence's state (linear-attention
 * Σ v φ(k)ᵀ, Σ φ(k); the sliding-window cache; the conv tail). Bytes per token
 * = (weights + B·state) / B; with the adapter's measured copy bandwidth (H200:
 * 4.23 TB/s) the implied fraction = bytes per step / step time / bandwidth.
 * Adapters without such a figure print none; no row prints a ratio against an
 * anchor we do not have.
 */
import type { Engine } from "../tensor/engine.ts";
import { BasedLM } from "../model/based.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { Decoder, stateBytesPerSequence } from "../model/decode.ts";
import { composeConfig } from "../configs/mod.ts";
import { Random } from "../tensor/random.ts";
import { H200 } from "./report.ts";

export interface GenerateBenchRow {
  experiment: string;
  batch: number;
  promptLen: number;
  decodeSteps: number;
  prefillMs: number;
  prefillTokS: number;
  decodeMsPerStep: number;
  decodeTokS: number;
  /** bytes read per decode step: weights + batch × state */
  bytesPerStep: number;
  bytesPerToken: number;
  /** fraction of the adapter's copy bandwidth the decode implies (null: no figure) */
  hbmFraction: number | null;
}

/** Measured copy bandwidth (TB/s) of adapters we have a figure for. */
export function adapterBandwidthTBps(name: string): number | null {
  return /H200/i.test(name) ? H200.copyTBps : null;
}

export async function benchGenerate(
  e: Engine,
  opts: {
    experiment: string;
    batches: number[];
    promptLen: number;
    decodeSteps: number;
    log?: (s: string) => void;
  },
): Promise<GenerateBenchRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const cfg = composeConfig([`experiment=${opts.experiment}`, "trainer.devices=1"]) as Record<
    string,
    Record<string, unknown>
  >;
  const P = opts.promptLen, N = opts.decodeSteps;
  const mc = modelConfigFromCfg(cfg.model.config as Record<string, unknown>, P + N + 1);
  const model = BasedLM.create(e, mc, { seed: 1111, groupOf: () => "all", groupOrder: ["all"] });
  const weights = 4 * model.store.count;
  const bw = adapterBandwidthTBps(e.info.name);
  log(
    `generate bench: ${opts.experiment} (${
      model.store.count.toLocaleString("en-US")
    } parameters), prompt ${P}, ${N} decode steps`,
  );
  const rng = new Random(7);
  const rows: GenerateBenchRow[] = [];
  try {
    for (const B of opts.batches) {
      const prompt = Int32Array.from({ length: B * P }, () => rng.int(mc.vocabSize));
      const tok = Int32Array.from({ length: B }, () => rng.int(mc.vocabSize));
      const run = async (steps: number) => {
        const dec = new Decoder(model, B, P + steps + 1);
        try {
          await e.sync();
          const t0 = performance.now();
          dec.prefill(prompt, P).dispose();
          await e.sync();
          const t1 = performance.now();
          for (let s = 0; s < steps; s++) dec.step(tok).dispose();
          await e.sync();
          return { prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
        } finally {
          dec.dispose();
        }
      };
      await run(2); // warm-up: pipelines, pool
      const t = await run(N);
      const bytesPerStep = weights + B * stateBytesPerSequence(mc, P + N + 1);
      const stepMs = t.decodeMs / N;
      rows.push({
        experiment: opts.experiment,
        batch: B,
        promptLen: P,
        decodeSteps: N,
        prefillMs: t.prefillMs,
        prefillTokS: (B * P) / (t.prefillMs / 1000),
        decodeMsPerStep: stepMs,
        decodeTokS: B / (stepMs / 1000),
        bytesPerStep,
        bytesPerToken: bytesPerStep / B,
        hbmFraction: bw ? bytesPerStep / (stepMs / 1000) / (bw * 1e12) : null,
      });
    }
  } finally {
    model.store.destroy();
  }
  return rows;
}

export function formatGenerateRows(rows: GenerateBenchRow[], bandwidthTBps: number | null): string {
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const lines = rows.map((r) =>
    `${r.experiment} B${r.batch}: prefill ${r.batch}x${r.promptLen} ${r.prefillMs.toFixed(1)} ms (${
      r.prefillTokS.toFixed(0)
    } tok/s) | decode ${r.decodeMsPerStep.toFixed(2)} ms/step (${
      r.decodeTokS.toFixed(1)
    } tok/s), reads ${mb(r.bytesPerStep)}/step = ${mb(r.bytesPerToken)}/token` +
    (r.hbmFraction === null
      ? " (no bandwidth figure for this adapter: no fraction)"
      : ` = ${(100 * r.hbmFraction).toFixed(1)}% of ${bandwidthTBps} TB/s`)
  );
  return lines.join("\n");
}
