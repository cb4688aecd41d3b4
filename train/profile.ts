/**
 * The profile of one training step (`Engine.startTiming` / `stopTiming`):
 * the table per kernel kind, and the summary per kernel class, each class
 * beside the limit that bounds it where one was measured: GEMMs in TFLOP/s
 * against the adapter's FMA peak (fp32, or packed f16 for the f16-input
 * kernels), every other class in GB/s of the tensors it bound against the
 * device copy bandwidth (`based bench --only peak,copy` measures both).
 */
import type { KernelTiming } from "../tensor/timing.ts";

export type ProfileRow = { kernel: string } & KernelTiming;

/** Measured limits of this adapter (bench/peak.ts, bench/copy.ts); absent: no ratio. */
export interface ProfileLimits {
  fp32TFlops?: number;
  f16TFlops?: number;
  copyTBps?: number;
}

/** The kernel classes, first match wins (kernel names: their `defineKernel` names). */
const CLASSES: [string, RegExp][] = [
  ["GEMM, f16 inputs", /^gemm_(?!splitk).*_f16$/],
  ["GEMM, fp32", /^(gemm_(?!splitk)|gemv)/],
  ["GEMM split-K sums", /^gemm_splitk/],
  ["linear attention", /^la_/],
  ["sliding-window attention", /^swa_/],
  ["short convolution", /^conv1d/],
  ["f16 casts", /^cast_/],
  ["RMSNorm", /^rmsnorm/],
  ["cross-entropy", /^cross_entropy/],
  ["AdamW + clipping", /^(adamw|clip_)/],
  ["SwiGLU", /swiglu/],
  ["layout, rotary, embedding", /^(layout_|rotary|embedding)/],
  ["elementwise, reductions", /^(ew_|reduce_)/],
];

export function kernelClass(kernel: string): string {
  return CLASSES.find(([, re]) => re.test(kernel))?.[0] ?? "other";
}

/** The per-kernel-kind table, then the per-class summary. */
export function formatProfile(p: ProfileRow[], limits: ProfileLimits = {}): string {
  const total = p.reduce((s, r) => s + r.ms, 0);
  const pct = (ms: number) => `${((100 * ms) / total).toFixed(1).padStart(5)}%`;
  const lines = [
    `profile of one step (GPU time per kernel kind; ${total.toFixed(1)} ms in ${
      p.reduce((s, r) => s + r.count, 0)
    } dispatches, each timed in its own pass):`,
  ];
  for (const r of [...p].sort((a, b) => b.ms - a.ms)) {
    lines.push(
      `  ${r.kernel.padEnd(40)} ${String(r.count).padStart(5)} x  ${
        r.ms.toFixed(2).padStart(9)
      } ms  ${pct(r.ms)}`,
    );
  }
  lines.push("by class (rate: GEMMs TFLOP/s; others GB/s of the tensors bound, each once):");
  for (const c of profileClasses(p, limits)) {
    const rate = c.tflops !== undefined
      ? `${c.tflops.toFixed(1)} TFLOP/s`
      : `${c.gbps.toFixed(0)} GB/s`;
    const lim = c.limit
      ? `of ${c.limit.value} ${c.limit.unit} (${c.limit.name}): ${c.limit.ratio.toFixed(2)}`
      : "";
    lines.push(
      `  ${c.name.padEnd(28)} ${c.ms.toFixed(1).padStart(8)} ms ${pct(c.ms)}  ${
        rate.padStart(16)
      }  ${lim}`,
    );
  }
  return lines.join("\n");
}

export interface ProfileClass {
  name: string;
  count: number;
  ms: number;
  /** GEMM classes: achieved TFLOP/s */
  tflops?: number;
  /** bytes bound per second, GB/s */
  gbps: number;
  limit?: { value: number; unit: string; name: string; ratio: number };
}

/** Sums a profile per kernel class, slowest first, with each class's rate against its limit. */
export function profileClasses(p: ProfileRow[], limits: ProfileLimits = {}): ProfileClass[] {
  const m = new Map<string, { count: number; ms: number; flops: number; bytes: number }>();
  for (const r of p) {
    const k = kernelClass(r.kernel);
    const c = m.get(k) ?? { count: 0, ms: 0, flops: 0, bytes: 0 };
    c.count += r.count;
    c.ms += r.ms;
    c.flops += r.flops;
    c.bytes += r.bytes;
    m.set(k, c);
  }
  const out: ProfileClass[] = [];
  for (const [name, c] of m) {
    const s = c.ms / 1e3;
    const gbps = s > 0 ? c.bytes / s / 1e9 : 0;
    const row: ProfileClass = { name, count: c.count, ms: c.ms, gbps };
    if (c.flops > 0) {
      row.tflops = s > 0 ? c.flops / s / 1e12 : 0;
      const f16 = name.includes("f16");
      const peak = f16 ? limits.f16TFlops : limits.fp32TFlops;
      if (peak) {
        row.limit = {
          value: round(peak),
          unit: "TFLOP/s",
          name: f16 ? "packed f16 FMA peak" : "fp32 FMA peak",
          ratio: row.tflops / peak,
        };
      }
    } else if (limits.copyTBps) {
      const gb = limits.copyTBps * 1e3;
      row.limit = { value: round(gb), unit: "GB/s", name: "copy", ratio: gbps / gb };
    }
    out.push(row);
  }
  return out.sort((a, b) => b.ms - a.ms);
}

function round(x: number): number {
  return x >= 100 ? Math.round(x) : Math.round(x * 10) / 10;
}
