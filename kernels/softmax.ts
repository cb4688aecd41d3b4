/**
 * Softmax along one axis, numerically stable (the row maximum is subtracted),
 * statistics in f32. Backward: gx = y ⊙ (gy − Σ gy⊙y).
 *
 * Last axis: a segment of TPR threads per row (TPR = 256, one workgroup per
 * row, for long rows; several rows per workgroup for short ones). Each thread
 * keeps an online (max, Σexp) over its strided slice of the row; the segment
 * combines them with a fixed shared-memory tree (deterministic). Rows whose
 * slice fits in K ≤ 8 registers per thread are read once; longer rows (up to
 * the 50,264-wide vocabulary and beyond) are read twice. Rows of a multiple
 * of 4 are processed as vec4.
 *
 * Other axes: one thread per (outer, inner) column walks the axis with
 * stride `inner` (neighbouring threads read neighbouring words).
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeSize, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, mergeMaxSumWgsl, nextPow2, WG } from "./wgsl.ts";

/** Most vec elements a thread keeps in registers between the two passes. */
const MAX_CACHED = 8;
/** Lowest f32 (WGSL constant expressions may not be infinite). */
const LOWEST = "-3.4028234e38";

interface RowPlan {
  /** words per element: 1 or 4 (vec4) */
  v: number;
  /** threads per row (power of two ≤ 256) */
  tpr: number;
  /** vec elements per thread */
  k: number;
  cached: boolean;
  groups: number;
}

function rowPlan(rows: number, n: number): RowPlan {
  const v = n % 4 === 0 ? 4 : 1;
  const nv = n / v;
  // about 4 elements per thread: fewer reduction levels, more rows per workgroup when short
  const tpr = Math.min(WG, nextPow2(Math.ceil(nv / 4)));
  const k = Math.ceil(nv / tpr);
  return { v, tpr, k, cached: k <= MAX_CACHED, groups: Math.ceil(rows / (WG / tpr)) };
}

const cache = new Map<string, Kernel>();

function vty(v: number): string {
  return v === 4 ? "vec4<f32>" : "f32";
}

/** The header shared by the row kernels: segment geometry and row bounds. */
function rowHead(p: RowPlan): string {
  return `
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let lane = lid % ${p.tpr}u;
  let row = g * ${WG / p.tpr}u + lid / ${p.tpr}u;
  let ok = row < P.rows;
  let base = row * P.n;`;
}

/** Loops `body` (which sees `j`, `kk`) over this thread's slice of the row. */
function rowLoop(p: RowPlan, body: string): string {
  if (p.cached) {
    return `for (var kk = 0u; kk < ${p.k}u; kk++) {
    let j = lane + kk * ${p.tpr}u;
    if (ok && j < P.n) { ${body} }
  }`;
  }
  return `if (ok) { for (var j = lane; j < P.n; j += ${p.tpr}u) { ${body} } }`;
}

function forwardKernel(p: RowPlan): Kernel {
  const key = `fwd_${p.v}_${p.tpr}_${p.k}_${p.cached}`;
  let k = cache.get(key);
  if (k) return k;
  const T = vty(p.v);
  const update = p.v === 4
    ? `let vm = max(max(v.x, v.y), max(v.z, v.w));
      if (vm > m) { s = s * exp(m - vm); m = vm; }
      let ev = exp(v - vec4<f32>(m));
      s = s + (ev.x + ev.y) + (ev.z + ev.w);`
    : `if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s = s + exp(v - m); }`;
  const load = p.cached ? "let v = x[base + j]; xs[kk] = v;" : "let v = x[base + j];";
  const reuse = p.cached ? "xs[kk]" : "x[base + j]";
  const shift = p.v === 4 ? "vec4<f32>(mx)" : "mx";
  k = defineKernel({
    name: `softmax_rows_v${p.v}_t${p.tpr}_k${p.cached ? p.k : "x"}`,
    params: { rows: "u32", n: "u32", groups: "u32" },
    bindings: {
      x: { access: "read", type: `array<${T}>` },
      y: { access: "rw", type: `array<${T}>` },
    },
    code: `
var<workgroup> red_m: array<f32, ${WG}>;
var<workgroup> red_s: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {${rowHead(p)}
  var m = ${LOWEST};
  var s = 0.0;
  ${p.cached ? `var xs: array<${T}, ${p.k}>;` : ""}
  ${rowLoop(p, `${load}\n      ${update}`)}
  ${mergeMaxSumWgsl(p.tpr, "lane")}
  let mx = red_m[lid - lane];
  let inv = 1.0 / red_s[lid - lane];
  ${rowLoop(p, `y[base + j] = exp(${reuse} - ${shift}) * inv;`)}
}`,
  });
  cache.set(key, k);
  return k;
}

function backwardKernel(p: RowPlan): Kernel {
  const key = `bwd_${p.v}_${p.tpr}_${p.k}_${p.cached}`;
  let k = cache.get(key);
  if (k) return k;
  const T = vty(p.v);
  const prod = p.v === 4 ? "dot(a, b)" : "a * b";
  const load = p.cached
    ? "let a = y[base + j]; let b = gy[base + j]; ys[kk] = a; gs[kk] = b;"
    : "let a = y[base + j]; let b = gy[base + j];";
  const write = p.cached
    ? "gx[base + j] = ys[kk] * (gs[kk] - d);"
    : "gx[base + j] = y[base + j] * (gy[base + j] - d);";
  k = defineKernel({
    name: `softmax_rows_bwd_v${p.v}_t${p.tpr}_k${p.cached ? p.k : "x"}`,
    params: { rows: "u32", n: "u32", groups: "u32" },
    bindings: {
      y: { access: "read", type: `array<${T}>` },
      gy: { access: "read", type: `array<${T}>` },
      gx: { access: "rw", type: `array<${T}>` },
    },
    code: `
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {${rowHead(p)}
  var s = 0.0;
  ${p.cached ? `var ys: array<${T}, ${p.k}>;\n  var gs: array<${T}, ${p.k}>;` : ""}
  ${rowLoop(p, `${load} s = s + ${prod};`)}
  red[lid] = s;
  workgroupBarrier();
  for (var off = ${p.tpr >> 1}u; off > 0u; off = off >> 1u) {
    if (lane < off) {
      s = s + red[lid + off];
      red[lid] = s;
    }
    workgroupBarrier();
  }
  let d = red[lid - lane];
  ${rowLoop(p, write)}
}`,
  });
  cache.set(key, k);
  return k;
}

/** Column kernels (softmax over a non-last axis): one thread per (outer, inner) pair. */
function columnKernel(backward: boolean): Kernel {
  const key = `col_${backward}`;
  let k = cache.get(key);
  if (k) return k;
  const head = `
  let t = linear_id(wid, nwg, lid, ${WG}u);
  if (t >= P.cols) { return; }
  let base = (t / P.inner) * P.n * P.inner + t % P.inner;`;
  k = defineKernel({
    name: backward ? "softmax_cols_bwd" : "softmax_cols",
    params: { cols: "u32", n: "u32", inner: "u32" },
    bindings: backward ? { y: "read", gy: "read", gx: "rw" } : { x: "read", y: "rw" },
    code: backward
      ? `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {${head}
  var d = 0.0;
  for (var j = 0u; j < P.n; j++) { let i = base + j * P.inner; d = d + y[i] * gy[i]; }
  for (var j = 0u; j < P.n; j++) { let i = base + j * P.inner; gx[i] = y[i] * (gy[i] - d); }
}`
      : `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {${head}
  var m = ${LOWEST};
  var s = 0.0;
  for (var j = 0u; j < P.n; j++) {
    let v = x[base + j * P.inner];
    if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s = s + exp(v - m); }
  }
  let inv = 1.0 / s;
  for (var j = 0u; j < P.n; j++) { let i = base + j * P.inner; y[i] = exp(x[i] - m) * inv; }
}`,
  });
  cache.set(key, k);
  return k;
}

function geometry(x: Tensor, axis: number): { outer: number; n: number; inner: number } {
  const a = axis < 0 ? axis + x.rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= x.rank) {
    throw new Error(`softmax: axis ${axis} out of range for ${x}`);
  }
  return {
    outer: shapeSize(x.shape.slice(0, a)),
    n: x.shape[a],
    inner: shapeSize(x.shape.slice(a + 1)),
  };
}

function launch(
  outer: number,
  n: number,
  inner: number,
  backward: boolean,
  bindings: Record<string, Tensor>,
): void {
  const e = Object.values(bindings)[0].engine;
  if (outer * n * inner === 0) return;
  if (inner === 1) {
    const p = rowPlan(outer, n);
    const k = backward ? backwardKernel(p) : forwardKernel(p);
    e.run(k, bindings, { rows: outer, n: n / p.v, groups: p.groups }, grid1d(p.groups, 1));
  } else {
    const cols = outer * inner;
    e.run(columnKernel(backward), bindings, { cols, n, inner }, grid1d(cols));
  }
}

/** y = softmax(x) along `axis` (f32; max-subtracted). */
export function softmax(x: Tensor, axis = -1): Tensor {
  if (x.dtype !== "f32") throw new Error(`softmax: ${x} is not f32`);
  const { outer, n, inner } = geometry(x, axis);
  const y = x.engine.empty(x.shape);
  launch(outer, n, inner, false, { x, y });
  record("softmax", [x], [y], [y], ([gy], [ys]) => {
    if (!gy) return [null];
    const gx = ys.engine.empty(ys.shape);
    launch(outer, n, inner, true, { y: ys, gy, gx });
    return [gx];
  });
  return y;
}
