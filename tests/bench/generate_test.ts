/**
 * bench --only generate, small: the rows carry positive throughputs, the bytes
 * read per decode step are weights + batch × state (per token: / batch), and a
 * CPU adapter (no measured bandwidth figure) gets no HBM fraction.
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { gpuTest } from "../helpers.ts";
import { adapterBandwidthTBps, benchGenerate, formatGenerateRows } from "../../bench/generate.ts";
import { composeConfig } from "../../configs/mod.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { stateBytesPerSequence } from "../../model/decode.ts";

gpuTest("bench generate: throughput rows and bytes per decode step (based-tiny)", async (e) => {
  const rows = await benchGenerate(e, {
    experiment: "example/based-tiny",
    batches: [2],
    promptLen: 8,
    decodeSteps: 2,
    log: () => {},
  });
  eq(rows.length, 1);
  const r = rows[0];
  ok(r.prefillTokS > 0 && r.decodeTokS > 0 && r.decodeMsPerStep > 0);
  const cfg = composeConfig(["experiment=example/based-tiny", "trainer.devices=1"]) as Record<
    string,
    Record<string, unknown>
  >;
  const mc = modelConfigFromCfg(cfg.model.config as Record<string, unknown>, 11);
  const state = stateBytesPerSequence(mc, 11);
  // based-tiny: 7,454,080 parameters (f32)
  eq(r.bytesPerStep, 4 * 7_454_080 + 2 * state);
  eq(r.bytesPerToken, r.bytesPerStep / 2);
  const bw = adapterBandwidthTBps(e.info.name);
  eq(r.hbmFraction === null, bw === null);
  eq(adapterBandwidthTBps("NVIDIA H200"), 4.23);
  ok(formatGenerateRows(rows, bw).includes("B2: prefill 2x8"));
});
