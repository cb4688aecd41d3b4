/**
 * `based parity` on the reference fixtures, as part of the suite: every case
 * the manifest describes (linear attention in each view, sliding window with
 * rotary, BaseConv, the three mixers, the full model in each view, AdamW)
 * within the manifest's tolerances. One test step per case.
 */
import { FIXTURES, HAVE_FIXTURES, sharedMissing, skipName } from "../helpers.ts";
import { formatCase, runParity } from "../../parity/parity.ts";

Deno.test({
  name: skipName(
    "parity: reference fixtures (all cases, three linear-attention views)",
    sharedMissing("fixtures", "manifest.json"),
  ),
  ignore: !HAVE_FIXTURES,
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
