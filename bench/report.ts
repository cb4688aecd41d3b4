/** Shared helpers for benchmarks: statistics and the measured-vs-limit table. */

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * A figure to compare with: measured on one adapter (`adapter`, a substring of
 * the adapter's name) on one workload. A ratio is printed only for a row that
 * ran that workload on that adapter: like with like.
 */
export interface Anchor {
  value: number;
  name: string;
  adapter: string;
  workload: string;
}

export interface BenchRow {
  /** what was measured */
  name: string;
  /** the measured figure */
  value: number;
  unit: string;
  /** the workload it ran (compared with an anchor's workload) */
  workload: string;
  /** the limit or anchor it is compared with; none: no ratio */
  anchor?: Anchor;
  /** true when smaller is better (times) */
  lowerIsBetter?: boolean;
  /** a second reference measured on the same machine in the same run (e.g. PyTorch), own column */
  sameMachine?: { value: number; name: string };
}

/** Whether a row's anchor applies: same workload, measured on this adapter. */
export function comparable(r: BenchRow, adapter: string): boolean {
  const a = r.anchor;
  return !!a && a.workload === r.workload && adapter.includes(a.adapter);
}

/**
 * measured / anchor, oriented so that 1.0 means "at the anchor" and > 1 beats
 * it; null when the row has no anchor or its anchor is another workload or
 * another adapter (no ratio is printed then).
 */
export function ratio(r: BenchRow, adapter: string): number | null {
  if (!comparable(r, adapter)) return null;
  const a = r.anchor!;
  return r.lowerIsBetter ? a.value / r.value : r.value / a.value;
}

export function formatRows(rows: BenchRow[], adapter: string): string {
  const same = rows.some((r) => r.sameMachine);
  const head = ["benchmark", "measured", "limit / anchor", "ratio"];
  if (same) head.push("same machine", "ratio");
  const body = rows.map((r) => {
    const q = ratio(r, adapter);
    const a = r.anchor;
    const s = r.sameMachine;
    const sameCols = !same ? [] : !s ? ["", ""] : [
      `${fmt(s.value)} ${r.unit} (${s.name})`,
      `${(r.lowerIsBetter ? s.value / r.value : r.value / s.value).toFixed(2)}x`,
    ];
    return [
      r.name,
      `${fmt(r.value)} ${r.unit}`,
      !a
        ? "(no anchor)"
        : q === null
        ? `(none here: ${a.name} is ${a.adapter}, ${a.workload})`
        : `${fmt(a.value)} ${r.unit} (${a.name})`,
      q === null ? "-" : `${q.toFixed(2)}x`,
      ...sameCols,
    ];
  });
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(w[i])).join("  ");
  return [line(head), line(w.map((n) => "-".repeat(n))), ...body.map(line)].join("\n");
}

function fmt(v: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

/** The workload of the full-size kernel benchmarks (the anchors' sizes). */
export const FULL_SIZES = "full sizes";

/** An anchor measured on the H200 (project brief / issue 5, PyTorch on the same machine). */
export function h200(value: number, name: string, workload = FULL_SIZES): Anchor {
  return { value, name, adapter: "H200", workload };
}

/** The Based-360m training step the PyTorch anchors ran. */
export const STEP_360M = "example/based-360m B8x2048";

/** Anchors measured on the H200 (DEVELOPERS brief / issue 5). */
export const H200 = {
  copyTBps: 4.23,
  cublasFp32TFlops: 51.1,
  /** vendor datasheet: plain fp32 FMA peak (132 SMs x 128 lanes x 2 x 1.98 GHz) */
  fp32PeakTFlops: 67,
  /**
   * packed f16 (HFMA2) measured, not the datasheet's 2x of fp32: register chains reach 66.0
   * TFLOP/s from WGSL (bench/peak.ts) and 63.8 through CUDA (dev/torch_fma_peak.py, Triton's
   * fma.rn.f16x2), 2026-12-04 (BENCHMARKS.md session H)
   */
  f16PeakTFlops: 66,
  /** the same register chains through CUDA on the same GPU (dev/torch_fma_peak.py, Triton) */
  cudaFp32ChainsTFlops: 65.2,
  cudaF16ChainsTFlops: 63.8,
  torchStepFp32TokS: 15841,
  torchStepFp32GiB: 63.5,
  /** issue 11: PyTorch bf16 autocast (tensor cores), same step */
  torchStepBf16TokS: 52574,
  /** dev/torch_based.py, bf16 autocast, on the H200 2026-12-04 (BENCHMARKS.md session G) */
  torchStepBf16GiB: 45.5,
};
