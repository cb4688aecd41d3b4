/**
 * `based parity` on the reference fixtures, as part of the suite: every case
 * the manifest describes (linear attention in each view, sliding window with
 * rotary, BaseConv, the three mixers, the full model in each view, AdamW)
 * within the manifest's tolerances. One test step per case.
 */
import { FIXTURES, HAVE_FIXTURES, sharedMissing, skipName } from "../helpers.ts";
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { join } from "node:path";
import { formatCase, runParity } from "../../parity/parity.ts";
import { BasedError } from "../../errors.ts";

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

Deno.test({
  name: skipName(
    "parity: reference fixtures in f16 mixed precision (--precision 16-mixed, f16 tolerances)",
    sharedMissing("fixtures", "manifest.json"),
  ),
  ignore: !HAVE_FIXTURES,
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

/**
 * A fixture folder whose manifest lists a file that is not there: the run
 * fails (its tensors were not compared) instead of passing what remains; a
 * --filter that matches no case is an error, not "0 passed, 0 failed".
 */
Deno.test({
  name: "parity: a missing fixture file fails the run; a filter matching nothing is an error",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { initEngine } = await import("../../tensor/engine.ts");
    const e = await initEngine();
    const dir = await Deno.makeTempDir({ prefix: "based-parity-test-" });
    try {
      const tensors = {
        "linear_attention.case0.q": { file: "linear_attention.safetensors" },
        "linear_attention.case0.y": { file: "linear_attention.safetensors" },
      };
      await Deno.writeTextFile(join(dir, "manifest.json"), JSON.stringify({ tensors }));
      const results = await runParity(e, dir, { log: () => {} });
      const failed = results.filter((r) => r.status === "fail");
      assertEquals(failed.map((r) => r.name), ["fixture files"], JSON.stringify(results));
      assert(
        failed[0].note?.includes(`lists 1 file(s) not in ${dir}: linear_attention.safetensors`) &&
          failed[0].note.includes("(2 tensors not compared)"),
        failed[0].note,
      );
      await rejects(
        runParity(e, dir, { filter: "no such case", log: () => {} }),
        (err: Error) =>
          err instanceof BasedError &&
          err.message.startsWith(`--filter 'no such case' matches none of the `),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
