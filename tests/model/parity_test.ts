/**
 * `based parity` on the reference fixtures, as part of the suite: every case
 * the manifest describes (linear attention in each view, sliding window with
 * rotary, BaseConv, the three mixers, the full model in each view, AdamW)
 * within the manifest's tolerances. One test step per case.
 */
import { FIXTURES, gpuTest } from "../helpers.ts";
import { formatCase, runParity } from "../../model/parity.ts";

let present = true;
try {
  Deno.statSync(`${FIXTURES}/manifest.json`);
} catch {
  present = false;
}

Deno.test({
  name: "parity: reference fixtures (all cases, three linear-attention views)",
  ignore: !present,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const { initEngine } = await import("../../tensor/engine.ts");
    const e = await initEngine();
    const lines: string[] = [];
    const results = await runParity(e, FIXTURES, { log: (s) => lines.push(s) });
    for (const r of results) {
      await t.step(r.name, () => {
        if (r.status === "fail") throw new Error(formatCase(r));
      });
    }
    console.log(lines.join("\n"));
  },
});

Deno.test({
  name: "parity: reference fixtures in f16 mixed precision (--precision 16-mixed, f16 tolerances)",
  ignore: !present,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const { initEngine } = await import("../../tensor/engine.ts");
    const e = await initEngine();
    const lines: string[] = [];
    const results = await runParity(e, FIXTURES, {
      log: (s) => lines.push(s),
      views: ["chunked"],
      precision: "16-mixed",
    });
    for (const r of results) {
      await t.step(r.name, () => {
        if (r.status === "fail") throw new Error(formatCase(r));
      });
    }
    console.log(lines.join("\n"));
  },
});

if (!present) {
  gpuTest("parity: fixtures folder missing (set BASED_SHARED_DIR)", () => {
    console.warn(`no fixtures at ${FIXTURES}: parity cases not run`);
  });
}
