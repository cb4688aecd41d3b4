/** Shared helpers for benchmarks: statistics and the measured-vs-limit table. */

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface BenchRow {
  /** what was measured */
  name: string;
  /** the measured figure */
  value: number;
  unit: string;
  /** the limit or anchor it is compared with */
  limit: number;
  limitName: string;
  /** true when smaller is better (times) */
  lowerIsBetter?: boolean;
  /** a second reference measured on the same machine (e.g. PyTorch), shown in its own column */
  anchor?: number;
  anchorName?: string;
}

/** measured / limit, oriented so that 1.0 means "at the limit" and > 1 beats it. */
export function ratio(r: BenchRow): number {
  return r.lowerIsBetter ? r.limit / r.value : r.value / r.limit;
}

export function formatRows(rows: BenchRow[]): string {
  const anchors = rows.some((r) => r.anchorName);
  const head = ["benchmark", "measured", "limit / anchor", "ratio"];
  if (anchors) head.push("same machine", "ratio");
  const body = rows.map((r) => {
    const row = [
      r.name,
      `${fmt(r.value)} ${r.unit}`,
      `${fmt(r.limit)} ${r.unit} (${r.limitName})`,
      `${ratio(r).toFixed(2)}x`,
    ];
    if (anchors) {
      const a = r.anchor;
      row.push(
        a ? `${fmt(a)} ${r.unit} (${r.anchorName})` : "",
        a ? `${ratio({ ...r, limit: a }).toFixed(2)}x` : "",
      );
    }
    return row;
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

/** Anchors measured on the H200 (DEVELOPERS brief / issue 5). */
export const H200 = {
  copyTBps: 4.23,
  cublasFp32TFlops: 51.1,
  /** vendor datasheet: plain fp32 FMA peak; packed f16 (HFMA2) twice that */
  fp32PeakTFlops: 67,
  f16PeakTFlops: 134,
  torchStepFp32TokS: 15841,
};
