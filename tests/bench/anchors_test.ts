/**
 * `based bench --anchors FILE[,FILE]`: PyTorch figures of this machine, the matmul file of
 * dev/torch_matmul.py and the step file of dev/torch_based.py merged; a step row gets PyTorch's
 * figure (and the ratio) only for its own workload and the matching precision mode.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { join } from "node:path";
import { formatTorchStep, readAnchors, torchStep } from "../../bench/anchors.ts";
import { type BenchRow, formatRows, STEP_360M } from "../../bench/report.ts";
import { BasedError } from "../../errors.ts";

const STEP = {
  device: "NVIDIA H200",
  step: {
    workload: STEP_360M,
    batch: 8,
    seq_len: 2048,
    fp32: { tokens_per_s: 15841, peak_gib: 63.5, ms_per_step: 1034.3 },
    tf32: { tokens_per_s: 42890, peak_gib: 63.5 },
    bf16: { tokens_per_s: 52574, peak_gib: 40.2 },
  },
};
const MATMUL = { device: "NVIDIA H200", fp32: { "4096^3 NN": 51.1 }, fp16: { "4096^3 NN": 700 } };

async function files(...objs: unknown[]): Promise<string> {
  const dir = await Deno.makeTempDir();
  const paths = [];
  for (const [i, o] of objs.entries()) {
    const p = join(dir, `a${i}.json`);
    await Deno.writeTextFile(p, typeof o === "string" ? o : JSON.stringify(o));
    paths.push(p);
  }
  return paths.join(",");
}

Deno.test("bench anchors: the matmul and step files merge", async () => {
  const a = await readAnchors(await files(MATMUL, STEP));
  assertEquals(a.fp32, MATMUL.fp32);
  assertEquals(a.fp16, MATMUL.fp16);
  assertEquals(a.step?.fp32?.tokens_per_s, 15841);
  // one file alone still reads as before
  assertEquals((await readAnchors(await files(MATMUL))).step, undefined);
});

Deno.test("bench anchors: a missing or broken file is one error line", async () => {
  const broken = await files("{not json");
  await rejects(readAnchors(broken), (e: Error) => {
    assert(e instanceof BasedError, String(e));
    assert(e.message.startsWith(`--anchors ${broken}: `) && !e.message.includes("\n"), e.message);
    return true;
  });
  await rejects(readAnchors(await files("[1, 2]")), /not a JSON object/);
  await rejects(readAnchors("/nonexistent/anchors.json"), BasedError);
});

Deno.test("bench anchors: a step row gets PyTorch's figure of its workload and precision", () => {
  const fp32 = torchStep(STEP, STEP_360M, "32-true")!;
  assertEquals(fp32.tokens, { value: 15841, name: "torch fp32, TF32 off" });
  assertEquals(fp32.gib, { value: 63.5, name: "torch fp32, TF32 off" });
  // our f16 mixed precision is compared with PyTorch's bf16 autocast
  assertEquals(torchStep(STEP, STEP_360M, "16-mixed")!.tokens.value, 52574);
  // another workload (based-tiny on a CPU adapter, another batch): no figure
  assertEquals(torchStep(STEP, "example/based-tiny B1x128", "32-true"), null);
  assertEquals(torchStep(STEP, "example/based-360m B4x2048", "32-true"), null);
  // no step figures, or none for this mode
  assertEquals(torchStep(null, STEP_360M, "32-true"), null);
  assertEquals(torchStep(MATMUL, STEP_360M, "32-true"), null);
  const noBf16 = { step: { workload: STEP_360M, fp32: STEP.step.fp32 } };
  assertEquals(torchStep(noBf16, STEP_360M, "16-mixed"), null);
});

Deno.test("bench anchors: the step table prints PyTorch's column and the ratio", () => {
  const t = torchStep(STEP, STEP_360M, "32-true")!;
  const rows: BenchRow[] = [
    { name: "step", value: 14349, unit: "tok/s", workload: STEP_360M, sameMachine: t.tokens },
    {
      name: "  peak memory",
      value: 34.1,
      unit: "GiB",
      workload: STEP_360M,
      lowerIsBetter: true,
      sameMachine: t.gib,
    },
  ];
  const table = formatRows(rows, "NVIDIA H200");
  assert(table.includes("15841 tok/s (torch fp32, TF32 off)") && table.includes("0.91x"), table);
  // memory: lower is better, so the ratio is PyTorch's peak / ours
  assert(table.includes("63.5 GiB (torch fp32, TF32 off)") && table.includes("1.86x"), table);
  assertEquals(
    formatTorchStep(STEP),
    `PyTorch step on this machine (${STEP_360M}): fp32 15,841 tok/s, 63.5 GiB; ` +
      "tf32 42,890 tok/s, 63.5 GiB; bf16 52,574 tok/s, 40.2 GiB",
  );
  assertEquals(formatTorchStep(MATMUL), null);
});
