import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  groupParams,
  moduleKindOf,
  paramGroup,
  sortSpecsForOptimizer,
} from "../../optim/groups.ts";
import { fixtureCpuTest, FIXTURES, HAVE_FIXTURES } from "../helpers.ts";

interface ParamEntry {
  name: string;
  shape: number[];
  weight_decay: number;
}

const P360 = HAVE_FIXTURES
  ? JSON.parse(await Deno.readTextFile(`${FIXTURES}/based360m_params.json`)) as {
    n_params_unique: number;
    params: ParamEntry[];
  }
  : { n_params_unique: 0, params: [] as ParamEntry[] };
const MANIFEST = HAVE_FIXTURES
  ? JSON.parse(await Deno.readTextFile(`${FIXTURES}/manifest.json`))
  : null;

// The example config's section (configs/experiment/example/based-360m.yaml): our quirk flag left at
// its default (faithful).
const GROUPING = { bias_weight_decay: false, normalization_weight_decay: false };

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

function totals(grouping: Record<string, unknown>): { decay: number; no_decay: number } {
  const t = { decay: 0, no_decay: 0 };
  for (const p of P360.params) {
    t[paramGroup(p.name, moduleKindOf(p.name), grouping)] += size(p.shape);
  }
  return t;
}

fixtureCpuTest("groups: the 225 Based-360m parameters land in the reference's groups", () => {
  assertEquals(P360.params.length, 225);
  let n = 0;
  for (const p of P360.params) {
    n += size(p.shape);
    // based360m_params.json gives the reference's group as each tensor's weight_decay (0.1 / 0.0)
    const want = p.weight_decay > 0 ? "decay" : "no_decay";
    const got = paramGroup(p.name, moduleKindOf(p.name), GROUPING);
    if (got !== want) throw new Error(`${p.name}: ${got}, reference ${want}`);
  }
  assertEquals(n, 362_620_928);
  assertEquals(n, P360.n_params_unique);
  // the reference's totals with the RMSNorm quirk on (docs/reference.md, Training)
  assertEquals(totals(GROUPING), { decay: 311_063_552, no_decay: 51_557_376 });
  // quirk off: the 55·1024 RMSNorm weights move to no_decay
  assertEquals(totals({ ...GROUPING, rmsnorm_weight_decay: false }), {
    decay: 311_063_552 - 56_320,
    no_decay: 51_557_376 + 56_320,
  });
  // normalization_weight_decay true decays them whatever the quirk flag says
  assertEquals(
    totals({ normalization_weight_decay: true, rmsnorm_weight_decay: false }).decay,
    311_063_552,
  );
  // bias_weight_decay true: the 17·(4096+1024) BaseConv biases are decayed, only the embedding is not
  assertEquals(totals({ ...GROUPING, bias_weight_decay: true }), {
    decay: 311_063_552 + 87_040,
    no_decay: 51_470_336,
  });
  // no grouping section at all: the reference passes model.parameters(), all decayed
  assertEquals(totals(null as unknown as Record<string, unknown>).decay, 362_620_928);
});

fixtureCpuTest(
  "groups: tiny-model groups and order match manifest.json info.model.param_groups",
  () => {
    const ref = MANIFEST.info.model.param_groups as { weight_decay: number; params: string[] }[];
    const names = MANIFEST.info.model.param_order as string[];
    const got = groupParams(names.map((n) => ({ name: n, kind: moduleKindOf(n) })), GROUPING);
    assertEquals(got.map((g) => g.group), ["decay", "no_decay"]);
    assertEquals(ref.map((g) => g.weight_decay), [0.1, 0]);
    // both the membership and the order inside each group (sorted names, Python's sorted())
    assertEquals(got.map((g) => g.names), ref.map((g) => g.params));
    // sortSpecsForOptimizer gives the same order for store specs
    const specs = names.map((n) => ({ name: n, group: paramGroup(n, moduleKindOf(n), GROUPING) }));
    assertEquals(sortSpecsForOptimizer(specs).map((s) => s.name), ref.flatMap((g) => g.params));
  },
);

Deno.test("groups: module kinds and config validation", () => {
  assertEquals(moduleKindOf("transformer.embeddings.word_embeddings.weight"), "embedding");
  assertEquals(moduleKindOf("transformer.layers.3.mixer.in_proj.bias"), "bias");
  assertEquals(moduleKindOf("transformer.layers.3.mixer.conv.conv.weight"), "conv");
  assertEquals(moduleKindOf("transformer.layers.3.norm2.weight"), "norm");
  assertEquals(moduleKindOf("transformer.ln_f.weight"), "norm");
  assertEquals(moduleKindOf("transformer.layers.2.mixer.Wqkv.weight"), "linear");
  assertThrows(() => moduleKindOf("transformer.layers.0.mixer.inv_freq"), /module kind/);
  assertThrows(() => paramGroup("x.weight", "linear", { bias_weight_decay: 1 }), /true or false/);
  assertThrows(() => paramGroup("x.weight", "linear", { bias_decay: false }), /not a known key/);
  // Hydra bookkeeping keys are ignored
  assertEquals(
    paramGroup("x.bias", "bias", { _target_: "x", bias_weight_decay: false }),
    "no_decay",
  );
});
