/**
 * trainer.limit_val_batches / limit_test_batches mean what Lightning means: an
 * int is a batch count (0 = none), a float in [0, 1] a fraction of the split's
 * batches (1.0 = all) — 1 and 1.0 included, told apart at the YAML / override
 * level (an integral float is kept as its text).
 */
import { deepStrictEqual as eq } from "node:assert/strict";
import { batchCount, readSettings } from "../../train/settings.ts";
import { compose, composeFrom, throwsBased } from "../config/helpers.ts";

const TINY = ["experiment=example/based-tiny"];
const KEY = "trainer.limit_val_batches";

/** Batches of a 10-batch validation split that `trainer.limit_val_batches=<text>` evaluates. */
function valBatches(text: string): number | undefined {
  const S = readSettings(compose([...TINY, `${KEY}=${text}`]), "/launch");
  return batchCount(S.limitValBatches, 10, KEY);
}

Deno.test("limits: overrides — 0 none, 1 one batch, 1.0 all, fractions, counts", () => {
  eq(valBatches("0"), 0);
  eq(valBatches("0.0"), 0);
  eq(valBatches("1"), 1);
  eq(valBatches("1.0"), undefined);
  eq(valBatches("1."), undefined);
  eq(valBatches("0.25"), 2); // Lightning: int(0.25 · 10)
  eq(valBatches("0.5"), 5);
  eq(valBatches("3"), 3);
  eq(valBatches("30"), 30); // (evaluate stops at the split's end)
});

Deno.test("limits: YAML — 1.0 is all, 1 is one batch; the default is the whole split", () => {
  const tree = (v: string) => ({
    "config.yaml": "defaults:\n  - _self_\n" +
      `datamodule:\n  max_length: 8\n  batch_size: 1\n` +
      `model:\n  config: { n_embd: 48, n_layer: 1, n_head: 2 }\ntrain:\n  optimizer:\n    lr: 0.001\n` +
      `trainer:\n  max_steps: 1\n  limit_val_batches: ${v}\n  limit_test_batches: 2\n`,
  });
  const S = (v: string) => readSettings(composeFrom(tree(v)), "/launch");
  eq(batchCount(S("1.0").limitValBatches, 10, KEY), undefined);
  eq(batchCount(S("1").limitValBatches, 10, KEY), 1);
  eq(batchCount(S("0.3").limitValBatches, 10, KEY), 3);
  eq(batchCount(S("0").limitValBatches, 10, KEY), 0);
  eq(batchCount(S("1.0").limitTestBatches, 10, KEY), 2);
  // an override onto a YAML 1.0 keeps its own type
  const over = (o: string) =>
    batchCount(readSettings(composeFrom(tree("1.0"), [o]), "/launch").limitValBatches, 10, KEY);
  eq(over(`${KEY}=1`), 1);
  eq(over(`${KEY}=1.0`), undefined);
  eq(over(`${KEY}=0.5`), 5);
  // the bundled trainer default (1.0): the whole split
  const S0 = readSettings(compose(TINY), "/launch");
  eq(batchCount(S0.limitTestBatches, 10, "trainer.limit_test_batches"), undefined);
});

Deno.test("limits: bad values are one-line errors naming the key", () => {
  throwsBased(() => valBatches("-1"), /trainer\.limit_val_batches must be ≥ 0, got -1/);
  throwsBased(() => valBatches("1.5"), /trainer\.limit_val_batches must be ≤ 1\.0 when a float/);
  throwsBased(
    () => readSettings(compose([...TINY, "trainer.limit_test_batches=abc"]), "/launch"),
    /trainer\.limit_test_batches must be a number, got "abc"/,
  );
  throwsBased(
    () => valBatches("0.01"),
    /trainer\.limit_val_batches=0\.01 is less than one of the split's 10 batches/,
  );
});
