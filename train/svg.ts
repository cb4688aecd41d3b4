/** Minimal SVG line charts (no dependencies): used for training curves and benchmark plots. */

export interface Series {
  name: string;
  points: [number, number][];
  /** draw markers at the points */
  markers?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
  logY?: boolean;
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(+v.toPrecision(12));
  }
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** p;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
  }
  return out.length ? out : [lo, hi];
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return `${+v.toPrecision(4)}`;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 720, H = o.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 50 };
  const pts = o.series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y) && (!o.logX || x > 0) && (!o.logY || y > 0)
  );
  let [x0, x1] = pts.length
    ? [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))]
    : [0, 1];
  let [y0, y1] = pts.length
    ? [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))]
    : [0, 1];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
  if (!o.logY) {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const tx = (x: number) => o.logX ? Math.log10(x) : x;
  const ty = (y: number) => o.logY ? Math.log10(y) : y;
  const sx = (x: number) => m.l + ((tx(x) - tx(x0)) / (tx(x1) - tx(x0))) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((ty(y) - ty(y0)) / (ty(y1) - ty(y0))) * (H - m.t - m.b);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`,
  );
  for (const v of o.logX ? logTicks(x0, x1) : niceTicks(x0, x1)) {
    const x = sx(v);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${H - m.b}" stroke="#eee"/>`);
    parts.push(`<text x="${x}" y="${H - m.b + 16}" text-anchor="middle">${fmt(v)}</text>`);
  }
  for (const v of o.logY ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    const y = sy(v);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${
      H - m.t - m.b
    }" fill="none" stroke="#444"/>`,
  );
  parts.push(
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`,
  );
  parts.push(
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${
      esc(o.yLabel)
    }</text>`,
  );
  o.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const p = s.points.filter(([x, y]) =>
      Number.isFinite(x) && Number.isFinite(y) && (!o.logX || x > 0) && (!o.logY || y > 0)
    );
    if (p.length) {
      parts.push(
        `<polyline fill="none" stroke="${c}" stroke-width="1.6" points="${
          p.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")
        }"/>`,
      );
      if (s.markers || p.length < 40) {
        for (const [x, y] of p) {
          parts.push(
            `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${c}"/>`,
          );
        }
      }
    }
    parts.push(`<rect x="${m.l + 10}" y="${m.t + 8 + i * 16}" width="12" height="3" fill="${c}"/>`);
    parts.push(`<text x="${m.l + 28}" y="${m.t + 13 + i * 16}">${esc(s.name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}
