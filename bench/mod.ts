/**
 * `based bench`: every benchmark prints the measured figure, the limit or
 * anchor it is compared with (H200 figures measured with PyTorch on the same
 * machine, from the project brief and issues), and the ratio. With --out, the
 * results go to bench.json and the attention timings to SVG plots.
 */
import { join } from "node:path";
import { BasedError } from "../errors.ts";
import { type Engine, initEngine } from "../tensor/engine.ts";
import { benchCopy, type CopyResult } from "./copy.ts";
import { benchPeak, type PeakResult } from "./peak.ts";
import { type BenchRow, formatRows, FULL_SIZES, H200, h200, STEP_360M } from "./report.ts";
import { benchMatmul, defaultMatmulSizes, tuneMatmul } from "./matmul.ts";
import { benchAttention, benchSlidingWindow } from "./attention.ts";
import { benchOptim } from "./optim.ts";
import { benchBandwidth } from "./bandwidth.ts";
import { benchStep } from "./step.ts";
import { formatTorchStep, readAnchors, torchStep } from "./anchors.ts";
import { adapterBandwidthTBps, benchGenerate, formatGenerateRows } from "./generate.ts";
import { configName, matmulConfigs, matmulKey, setMatmulConfig } from "../kernels/matmul/mod.ts";
import { loadTuningCache, saveTuningCache } from "../kernels/matmul/mod.ts";
import { lineChart } from "../train/svg.ts";
import type { LinearAttentionView } from "../kernels/linear_attention/mod.ts";

export interface BenchOptions {
  /** a subset of copy, peak, matmul, attention, bandwidth, optim, step, generate */
  only?: string[];
  quick?: boolean;
  out?: string;
  tune?: boolean;
  batch?: number;
  lengths?: number[];
  profile?: boolean;
  /** only matmul shapes whose name contains this (tuning and the matmul benchmark), and only the
   * step views whose name contains it */
  filter?: string;
  /** precision of the matmul and step benchmarks: 32 (default) or 16-mixed (f16 inputs, f32
   * accumulation; the step: f16 mixed precision with loss scaling) */
  precision?: string;
  /** PyTorch figures measured on this machine, comma-separated JSON files (bench/anchors.ts):
   * dev/torch_matmul.py's matmul figures, dev/torch_based.py's step figures */
  anchors?: string;
}

/** `--precision` of the matmul benchmark: true for f16 inputs. */
export function benchF16(precision = "32"): boolean {
  if (["32", "32-true"].includes(precision)) return false;
  if (["16", "16-mixed", "bf16", "bf16-mixed"].includes(precision)) return true;
  throw new BasedError(
    `bench --precision ${precision} is not a matmul precision`,
    "use 32 or 16-mixed",
  );
}

/** PyTorch fp32 (no TF32) linear-attention fwd+bwd at B8 H16 (issue 5), ms. */
const TORCH_LA = {
  2048: { quadratic: 42.9, fla: 17.8, fastTransformers: 33.7 },
  8192: { quadratic: 579, fla: 251, fastTransformers: 134 },
} as Record<number, { quadratic: number; fla: number; fastTransformers: number }>;
/** issue 5 goals for our views, ms */
const LA_GOAL: Record<string, Record<number, number>> = {
  chunked: { 2048: 15, 8192: 60 },
  cumsum: { 2048: 30, 8192: 120 },
};

async function tune(
  e: Engine,
  log: (s: string) => void,
  quick: boolean,
  filter?: string,
  f16 = false,
): Promise<void> {
  const sizes = defaultMatmulSizes(e.maxBinding).filter((s) => !filter || s.name.includes(filter));
  for (const { name, size } of sizes) {
    const [m, n, k] = size;
    if (Math.max(m * k, k * n, m * n) * 4 > e.maxBinding) continue;
    const shape = { m, n, k, transA: !!size[3], transB: !!size[4], batch: 1, f16 };
    const cands = matmulConfigs(e, shape);
    const ranked = await tuneMatmul(e, shape, quick ? cands.slice(0, 3) : cands);
    if (!ranked.length) continue;
    setMatmulConfig(matmulKey(shape), ranked[0].config);
    log(
      `tune ${name.padEnd(28)} best ${configName(ranked[0].config)} ${
        ranked[0].tflops.toFixed(1)
      } TFLOP/s (of ${ranked.length})`,
    );
    await saveTuningCache(e); // after every shape: an interrupted tuning keeps what it measured
  }
  log(`tuning table: ${await saveTuningCache(e)}`);
}

export async function runBench(opts: BenchOptions): Promise<void> {
  const f16 = benchF16(opts.precision);
  const e = await initEngine();
  const log = (s: string) => console.log(s);
  const only = opts.only ? new Set(opts.only) : null;
  const want = (n: string) => !only || only.has(n);
  const quick = opts.quick ?? e.info.isFallback;
  const rows: BenchRow[] = [];
  // anchors hold for the full sizes only; --quick and --lengths runs are other workloads
  const scale = quick ? "quick sizes" : FULL_SIZES;
  const results: Record<string, unknown> = {
    adapter: e.info.name,
    backend: e.info.backend,
    date: new Date().toISOString(),
    quick,
  };
  log(`adapter: ${e.info.name} (${e.info.backend})${quick ? " [quick sizes]" : ""}`);
  const cached = await loadTuningCache(e);
  if (cached) log(`matmul tuning: ${cached} entries from the cache`);
  if (f16 && !e.hasF16) {
    throw new Error("bench --precision 16-mixed: this adapter has no shader-f16");
  }
  if (opts.tune) await tune(e, log, quick, opts.filter, f16);
  const flush = () => {
    if (rows.length) log(formatRows(rows.splice(0), e.info.name));
  };
  const anchors = opts.anchors ? await readAnchors(opts.anchors) : null;

  // the copy benchmark's size; also the profile's bandwidth limit below
  const copyBytes = quick ? 64 << 20 : 1 << 30;
  let copy: CopyResult | null = null;
  if (want("copy")) {
    const r = copy = await benchCopy(e, { bytes: copyBytes });
    results.copy = r;
    rows.push({
      name: `copy ${(r.bytes / 2 ** 30).toFixed(2)} GiB`,
      value: r.tbps,
      unit: "TB/s",
      workload: `copy ${(r.bytes / 2 ** 30).toFixed(2)} GiB`,
      anchor: h200(H200.copyTBps, "PyTorch copy", "copy 1.00 GiB"),
    });
    flush();
  }
  let peak: PeakResult[] | null = null;
  if (want("peak")) {
    peak = await benchPeak(e, { quick });
    results.peak = peak;
    for (const p of peak) {
      const f16p = p.precision === "f16";
      rows.push({
        name: `${f16p ? "packed f16" : "fp32"} FMA peak of a WGSL kernel (register chains)`,
        value: p.tflops,
        unit: "TFLOP/s",
        workload: scale,
        // like with like: the same register chains through CUDA (Triton) on the same GPU
        anchor: f16p
          ? h200(H200.cudaF16ChainsTFlops, "CUDA f16x2 chains")
          : h200(H200.cudaFp32ChainsTFlops, "CUDA fp32 chains"),
      });
    }
    flush();
  }
  if (want("matmul")) {
    const sizes = quick
      ? [[256, 256, 256, 0, 0], [256, 256, 256, 0, 1], [256, 256, 256, 1, 0], [256, 256, 256, 1, 1]]
      : undefined;
    const r = await benchMatmul(e, {
      f16,
      sizes: sizes ??
        (opts.filter
          ? defaultMatmulSizes(e.maxBinding).filter((s) => s.name.includes(opts.filter!)).map((s) =>
            s.size
          )
          : undefined),
    });
    results.matmul = r;
    // PyTorch on this machine: {fp32: {name: TFLOP/s}, fp16: {...}} (dev/torch_matmul.py)
    if (anchors?.fp32 || anchors?.fp16) {
      results.matmulAnchors = { fp32: anchors.fp32, fp16: anchors.fp16 };
    }
    for (const m of r) {
      const a = anchors?.[f16 ? "fp16" : "fp32"]?.[m.name];
      rows.push({
        name: `matmul ${f16 ? "f16" : "f32"} ${m.name} [${m.config}]`,
        value: m.tflops,
        unit: "TFLOP/s",
        workload: scale,
        anchor: f16
          ? h200(H200.f16PeakTFlops, "packed f16 FMA peak, measured")
          : h200(H200.fp32PeakTFlops, "fp32 FMA peak"),
        sameMachine: a
          ? { value: a, name: f16 ? "torch fp16, tensor cores" : "torch fp32, TF32 off" }
          : undefined,
      });
    }
    flush();
  }
  if (want("attention")) {
    const lengths = opts.lengths ? opts.lengths : quick ? [64, 128] : [512, 1024, 2048, 4096, 8192];
    const B = quick ? 1 : 8, H = quick ? 2 : 16;
    const r = await benchAttention(e, { lengths, B, H });
    results.attention = { B, H, rows: r };
    // the anchors ran B8 H16 F16 D64
    const laWorkload = (L: number) => `B${B} H${H} L${L}`;
    for (const a of r) {
      const goal = LA_GOAL[a.view]?.[a.L];
      const torch = TORCH_LA[a.L];
      if (goal) {
        rows.push({
          name: `linear attn ${a.view} L${a.L} fwd+bwd`,
          value: a.fwdBwdMs,
          unit: "ms",
          workload: laWorkload(a.L),
          anchor: h200(goal, "goal", `B8 H16 L${a.L}`),
          lowerIsBetter: true,
        });
      } else if (torch && a.view === "quadratic") {
        rows.push({
          name: `linear attn quadratic L${a.L} fwd+bwd`,
          value: a.fwdBwdMs,
          unit: "ms",
          workload: laWorkload(a.L),
          anchor: h200(torch.quadratic, "PyTorch quadratic fp32", `B8 H16 L${a.L}`),
          lowerIsBetter: true,
        });
      } else {rows.push({
          name: `linear attn ${a.view} L${a.L} fwd+bwd`,
          value: a.fwdBwdMs,
          unit: "ms",
          workload: laWorkload(a.L),
          anchor: torch ? h200(torch.fla, "fla fp32", `B8 H16 L${a.L}`) : undefined,
          lowerIsBetter: true,
        });}
    }
    // linearity: time(L_max)/time(L_min) against L_max/L_min
    for (const view of ["chunked", "cumsum", "quadratic"] as LinearAttentionView[]) {
      const v = r.filter((x) => x.view === view).sort((a, b) => a.L - b.L);
      if (v.length >= 2) {
        const a = v[0], b = v[v.length - 1];
        log(
          `${view}: time ratio L${b.L}/L${a.L} = ${
            (b.fwdBwdMs / a.fwdBwdMs).toFixed(2)
          } (length ratio ${(b.L / a.L).toFixed(0)})`,
        );
      }
    }
    try {
      const sw = await benchSlidingWindow(e, {
        lengths: quick ? [128] : [2048],
        B: quick ? 1 : 8,
        H: quick ? 2 : 16,
      });
      results.slidingWindow = sw;
      for (const s of sw as { L: number; fwdBwdMs: number }[]) {
        rows.push({
          name: `sliding window 128 L${s.L} fwd+bwd`,
          value: s.fwdBwdMs,
          unit: "ms",
          workload: scale,
          lowerIsBetter: true,
        });
      }
    } catch (err) {
      log(`sliding window bench failed: ${(err as Error).message}`);
    }
    flush();
    if (opts.out) {
      await Deno.mkdir(opts.out, { recursive: true });
      const views = [...new Set(r.map((x) => x.view))];
      // time against sequence length per view: forward + backward, and forward alone
      for (
        const [file, what, key] of [["attention.svg", "fwd+bwd", "fwdBwdMs"], [
          "attention_forward.svg",
          "forward",
          "fwdMs",
        ]] as const
      ) {
        const svg = lineChart({
          title: `Based linear attention ${what}, B${B} H${H} F16 D64 (${e.info.name})`,
          xLabel: "sequence length",
          yLabel: "ms",
          logX: true,
          logY: true,
          series: views.map((v) => ({
            name: v,
            points: r.filter((x) => x.view === v).map((x) => [x.L, x[key]] as [number, number]),
            markers: true,
          })),
        });
        await Deno.writeTextFile(join(opts.out, file), svg);
      }
    }
  }
  if (want("bandwidth")) {
    const r = await benchBandwidth(e, { quick });
    results.bandwidth = r;
    for (const b of r) {
      rows.push({
        name: b.name,
        value: b.tbps,
        unit: "TB/s",
        workload: scale,
        anchor: h200(H200.copyTBps, "H200 copy"),
      });
    }
    flush();
  }
  if (want("optim")) {
    const r = await benchOptim(e, { params: quick ? 4_000_000 : undefined });
    results.optim = r;
    rows.push({
      name: `AdamW step ${(r as { params?: number }).params ?? ""} params (adam only)`,
      value: r.adamTbps,
      unit: "TB/s",
      workload: scale,
      anchor: h200(H200.copyTBps, "H200 copy"),
    });
    rows.push({
      name: "AdamW + clip (effective 28 B/param)",
      value: r.tbps,
      unit: "TB/s",
      workload: scale,
      anchor: h200(H200.copyTBps, "H200 copy"),
    });
    flush();
  }
  if (want("step")) {
    const batch = opts.batch ?? (quick ? 1 : 8);
    const experiment = quick ? "example/based-tiny" : "example/based-360m";
    // PyTorch on this machine (dev/torch_based.py): its own column, like with like
    const torchLine = formatTorchStep(anchors);
    if (torchLine) {
      log(torchLine);
      results.stepAnchors = anchors!.step;
    }
    // the profile's per-class ratios: this adapter's measured FMA peaks and copy bandwidth
    if (opts.profile && e.hasTimestamps) {
      peak ??= await benchPeak(e, { quick });
      copy ??= await benchCopy(e, { bytes: copyBytes });
    }
    const limits = {
      fp32TFlops: peak?.find((p) => p.precision === "f32")?.tflops,
      f16TFlops: peak?.find((p) => p.precision === "f16")?.tflops,
      copyTBps: copy?.tbps,
    };
    const views = (quick ? ["chunked"] : ["chunked", "quadratic", "cumsum"]).filter((v) =>
      !opts.filter || v.includes(opts.filter)
    );
    if (!views.length) log(`step bench: no view name contains --filter ${opts.filter}`);
    for (const view of views) {
      try {
        const r = await benchStep(e, {
          experiment,
          batch,
          view,
          seqLen: quick ? 128 : undefined,
          steps: quick ? 2 : 5,
          profile: opts.profile && view === views[0],
          limits,
          precision: opts.precision,
          log,
        });
        (results.step ??= []) as unknown[];
        (results.step as unknown[]).push(r);
        const workload = `${experiment} B${r.batch}x${r.seqLen}`;
        const torch = torchStep(anchors, workload, r.precision);
        rows.push({
          name: `${experiment} step B${r.batch}x${r.seqLen} ${view} ${r.precision}`,
          value: r.tokensPerSec,
          unit: "tok/s",
          workload,
          // f16 mixed precision is compared with PyTorch's bf16 autocast (tensor cores)
          anchor: r.precision === "16-mixed"
            ? h200(H200.torchStepBf16TokS, "PyTorch bf16 autocast", STEP_360M)
            : h200(H200.torchStepFp32TokS, "PyTorch fp32", STEP_360M),
          sameMachine: torch?.tokens,
        });
        rows.push({
          name: `  peak memory`,
          value: r.peakBytes / 2 ** 30,
          unit: "GiB",
          workload,
          anchor: r.precision === "16-mixed"
            ? h200(H200.torchStepBf16GiB, "PyTorch bf16 autocast", STEP_360M)
            : h200(H200.torchStepFp32GiB, "PyTorch fp32", STEP_360M),
          lowerIsBetter: true,
          sameMachine: torch?.gib,
        });
      } catch (err) {
        log(`step bench (${view}) failed: ${(err as Error).message}`);
      }
      flush();
    }
  }
  if (want("generate")) {
    // CPU adapters (quick): based-tiny, short prompts; the figures have no anchor
    const experiment = quick ? "example/based-tiny" : "example/based-360m";
    if (quick) log("generate bench: quick sizes use based-tiny (not Based-360m)");
    try {
      const r = await benchGenerate(e, {
        experiment,
        batches: opts.batch ? [Number(opts.batch)] : [1, 16],
        promptLen: quick ? 32 : 2048,
        decodeSteps: quick ? 16 : 128,
        log,
      });
      results.generate = r;
      log(formatGenerateRows(r, adapterBandwidthTBps(e.info.name)));
    } catch (err) {
      log(`generate bench failed: ${(err as Error).message}`);
    }
  }
  if (opts.out) {
    await Deno.mkdir(opts.out, { recursive: true });
    await Deno.writeTextFile(join(opts.out, "bench.json"), JSON.stringify(results, null, 2));
  }
}
