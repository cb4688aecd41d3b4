/**
 * The bench table's ratio rule: a ratio only for like with like (the anchor's
 * workload, on the anchor's adapter); rows without an anchor print no ratio.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  type BenchRow,
  comparable,
  formatRows,
  H200,
  h200,
  ratio,
  STEP_360M,
} from "../../bench/report.ts";

const CPU = "llvmpipe (LLVM 15.0.6, 256 bits)";
const GPU = "NVIDIA H200";

const step = (workload: string, value: number): BenchRow => ({
  name: `step ${workload}`,
  value,
  unit: "tok/s",
  workload,
  anchor: h200(H200.torchStepFp32TokS, "PyTorch fp32", STEP_360M),
});

Deno.test("bench ratio: based-tiny B1 on a CPU adapter is not compared with the H200 360m figure", () => {
  const r = step("example/based-tiny B1x128", 150);
  assertEquals(ratio(r, CPU), null);
  // the same workload on another adapter is not like with like either
  assertEquals(ratio(step(STEP_360M, 90), CPU), null);
  // another workload on the H200 neither
  assertEquals(ratio(r, GPU), null);
  const table = formatRows([r], CPU);
  assert(!/\d+\.\d+x/.test(table), table);
  assert(!table.includes("0.00x"), table);
});

Deno.test("bench ratio: the anchor's workload on the anchor's adapter gets its ratio", () => {
  const r = step(STEP_360M, 14_349);
  assert(comparable(r, GPU));
  assertEquals(ratio(r, GPU)!.toFixed(2), "0.91");
  // times: lower is better, so the ratio is anchor / measured
  const t: BenchRow = {
    name: "linear attn chunked L2048",
    value: 13.2,
    unit: "ms",
    workload: "B8 H16 L2048",
    anchor: h200(15, "goal", "B8 H16 L2048"),
    lowerIsBetter: true,
  };
  assertEquals(ratio(t, GPU)!.toFixed(2), "1.14");
  assert(formatRows([r, t], GPU).includes("0.91x"));
});

Deno.test("bench ratio: rows without an anchor print no ratio", () => {
  const r: BenchRow = { name: "sliding window", value: 10.8, unit: "ms", workload: "full sizes" };
  assertEquals(ratio(r, GPU), null);
  const last = formatRows([r], GPU).split("\n").pop()!;
  assert(last.includes("(no anchor)") && last.trimEnd().endsWith("-"), last);
});
