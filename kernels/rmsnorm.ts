/**
 * RMSNorm (`based/ops/triton/layer_norm.py::RMSNorm`): y = x · r · w, r = rsqrt(mean(x²) + eps),
 * weight only, statistics in f32; and the fused residual add + norm of a pre-norm block, `[s, y] =
 * addRmsNorm(x, residual, w)` with s = x + residual, y = RMSNorm(s).
 *
 * Forward: a segment of TPR threads per row (several rows per workgroup for
 * narrow rows) loads its slice of the row into registers (vec4 when N % 4 ==
 * 0), reduces Σx² with a fixed shared-memory tree, and writes y (and s) from
 * the registers: one read of x (and residual), one write of y (and s). The
 * per-row r is saved for the backward.
 *
 * Backward (docs/reference.md, Gradients): with u = gy ⊙ w, gx = r·u − x·r³·(Σ_j u_j x_j)/N and
 * gw = Σ_rows gy ⊙ x ⊙ r. One kernel computes gx row by row and keeps each
 * thread's column partial sums of gw in registers over a fixed block of rows;
 * the segments of a workgroup are combined by a fixed shared-memory tree, each
 * workgroup writes one partial row, and a second pass sums those rows in a
 * fixed order (no atomics: bit-identical on every run). The block size
 * depends only on (rows, N): about 1024 workgroups. When w is a parameter leaf
 * the second pass adds into its gradient buffer directly (ACCUMULATED).
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { ACCUMULATED, type GradOut, record } from "../tensor/tape.ts";
import { ENTRY_1D, grid1d, nextPow2, WG } from "./wgsl.ts";

/** Most vec elements per thread (registers): N ≤ 256·32·V. */
const MAX_K = 32;
/** Workgroups the gw-producing backward aims for (the rest is rows per workgroup). */
const TARGET_GROUPS = 1024;

interface Plan {
  v: number;
  tpr: number;
  rpw: number;
  k: number;
  /** row width in vec units */
  nv: number;
}

function plan(n: number): Plan {
  const v = n % 4 === 0 ? 4 : 1;
  const nv = n / v;
  // about two vec elements per thread, a whole workgroup for N ≥ 2048 (vec4) / 512 (scalar)
  const tpr = Math.min(WG, nextPow2(Math.ceil(nv / 2)));
  const k = Math.ceil(nv / tpr);
  if (k > MAX_K) throw new Error(`rmsNorm: row width ${n} is over ${WG * MAX_K * v}`);
  return { v, tpr, rpw: WG / tpr, k, nv };
}

const cache = new Map<string, Kernel>();
const vty = (v: number) => (v === 4 ? "vec4<f32>" : "f32");
const dotOf = (v: number, a: string, b: string) => (v === 4 ? `dot(${a}, ${b})` : `${a} * ${b}`);

/** Segment sum over TPR lanes in `red` (fixed tree); callers pass `s`, get the total. */
function segSum(p: Plan): string {
  return `
fn seg_sum(v: f32, lid: u32, lane: u32) -> f32 {
  workgroupBarrier();
  var s = v;
  red[lid] = s;
  workgroupBarrier();
  for (var off = ${p.tpr >> 1}u; off > 0u; off = off >> 1u) {
    if (lane < off) {
      s = s + red[lid + off];
      red[lid] = s;
    }
    workgroupBarrier();
  }
  return red[lid - lane];
}`;
}

function forwardKernel(p: Plan, hasRes: boolean): Kernel {
  const key = `fwd_${p.v}_${p.tpr}_${p.k}_${hasRes}`;
  let kern = cache.get(key);
  if (kern) return kern;
  const T = vty(p.v);
  const arr = (access: "read" | "rw") => ({ access, type: `array<${T}>` });
  const bindings: Record<string, { access: "read" | "rw"; type: string }> = { x: arr("read") };
  if (hasRes) bindings.res = arr("read");
  bindings.w = arr("read");
  if (hasRes) bindings.sum = arr("rw");
  bindings.y = arr("rw");
  bindings.rstd = { access: "rw", type: "array<f32>" };
  kern = defineKernel({
    name: `rmsnorm${hasRes ? "_add" : ""}_v${p.v}_t${p.tpr}_k${p.k}`,
    params: { rows: "u32", n: "u32", nf: "f32", eps: "f32", groups: "u32" },
    bindings,
    code: `
var<workgroup> red: array<f32, ${WG}>;
${segSum(p)}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let lane = lid % ${p.tpr}u;
  let row = g * ${p.rpw}u + lid / ${p.tpr}u;
  let ok = row < P.rows;
  let base = row * P.n;
  var xs: array<${T}, ${p.k}>;
  var ss = 0.0;
  for (var kk = 0u; kk < ${p.k}u; kk++) {
    let j = lane + kk * ${p.tpr}u;
    if (ok && j < P.n) {
      ${
      hasRes
        ? "let v = x[base + j] + res[base + j];\n      sum[base + j] = v;"
        : "let v = x[base + j];"
    }
      xs[kk] = v;
      ss = ss + ${dotOf(p.v, "v", "v")};
    }
  }
  let r = inverseSqrt(seg_sum(ss, lid, lane) / P.nf + P.eps);
  if (ok) {
    if (lane == 0u) { rstd[row] = r; }
    for (var kk = 0u; kk < ${p.k}u; kk++) {
      let j = lane + kk * ${p.tpr}u;
      if (j < P.n) { y[base + j] = xs[kk] * r * w[j]; }
    }
  }
}`,
  });
  cache.set(key, kern);
  return kern;
}

interface BwdFlags {
  gx: boolean;
  gw: boolean;
  gs: boolean;
}

/**
 * End of the gw-producing backward: the RPW segments' column sums are added
 * in a fixed tree through shared memory; segment 0 writes the workgroup's
 * partial row part[g, :].
 */
function gwOut(p: Plan): string {
  const write = `if (j < P.n) { part[g * P.n + j] = v; }`;
  if (p.rpw === 1) {
    return `for (var kk = 0u; kk < ${p.k}u; kk++) {
    let j = lane + kk * ${p.tpr}u;
    let v = acc[kk];
    ${write}
  }`;
  }
  return `for (var kk = 0u; kk < ${p.k}u; kk++) {
    let j = lane + kk * ${p.tpr}u;
    var v = acc[kk];
    workgroupBarrier();
    shv[lid] = v;
    workgroupBarrier();
    for (var off = ${p.rpw >> 1}u; off > 0u; off = off >> 1u) {
      if (seg < off) {
        v = v + shv[lid + off * ${p.tpr}u];
        shv[lid] = v;
      }
      workgroupBarrier();
    }
    if (seg == 0u) { ${write} }
  }`;
}

function backwardKernel(p: Plan, f: BwdFlags): Kernel {
  const key = `bwd_${p.v}_${p.tpr}_${p.k}_${f.gx}_${f.gw}_${f.gs}`;
  let kern = cache.get(key);
  if (kern) return kern;
  const T = vty(p.v);
  const arr = (access: "read" | "rw") => ({ access, type: `array<${T}>` });
  const bindings: Record<string, { access: "read" | "rw"; type: string }> = {
    x: arr("read"),
    w: arr("read"),
    rstd: { access: "read", type: "array<f32>" },
    gy: arr("read"),
  };
  if (f.gs) bindings.gs = arr("read");
  if (f.gx) bindings.gx = arr("rw");
  if (f.gw) bindings.part = arr("rw");
  const gxPart = f.gx
    ? `
    let c = r * r * r * (seg_sum(d, lid, lane) / P.nf);
    if (ok) {
      for (var kk = 0u; kk < ${p.k}u; kk++) {
        let j = lane + kk * ${p.tpr}u;
        if (j < P.n) { gx[base + j] = r * us[kk] - xs[kk] * c${f.gs ? " + gs[base + j]" : ""}; }
      }
    }`
    : "";
  kern = defineKernel({
    name: `rmsnorm_bwd_v${p.v}_t${p.tpr}_k${p.k}${f.gx ? "_gx" : ""}${f.gw ? "_gw" : ""}${
      f.gs ? "_gs" : ""
    }`,
    params: { rows: "u32", n: "u32", nf: "f32", steps: "u32", groups: "u32" },
    bindings,
    code: `
var<workgroup> red: array<f32, ${WG}>;
${f.gw && p.rpw > 1 ? `var<workgroup> shv: array<${T}, ${WG}>;` : ""}
${segSum(p)}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let lane = lid % ${p.tpr}u;
  let seg = lid / ${p.tpr}u;
  var ws: array<${T}, ${p.k}>;
  ${f.gw ? `var acc: array<${T}, ${p.k}>;` : ""}
  for (var kk = 0u; kk < ${p.k}u; kk++) {
    let j = lane + kk * ${p.tpr}u;
    if (j < P.n) { ws[kk] = w[j]; }
  }
  for (var t = 0u; t < P.steps; t++) {
    let row = (g * P.steps + t) * ${p.rpw}u + seg;
    let ok = row < P.rows;
    let base = row * P.n;
    var r = 0.0;
    if (ok) { r = rstd[row]; }
    var xs: array<${T}, ${p.k}>;
    var us: array<${T}, ${p.k}>;
    var d = 0.0;
    for (var kk = 0u; kk < ${p.k}u; kk++) {
      let j = lane + kk * ${p.tpr}u;
      if (ok && j < P.n) {
        let xv = x[base + j];
        let gv = gy[base + j];
        let u = gv * ws[kk];
        xs[kk] = xv;
        us[kk] = u;
        d = d + ${dotOf(p.v, "u", "xv")};
        ${f.gw ? "acc[kk] = acc[kk] + gv * xv * r;" : ""}
      }
    }${gxPart}
  }
  ${f.gw ? gwOut(p) : ""}
}`,
  });
  cache.set(key, kern);
  return kern;
}

/**
 * gw[j] (+)= Σ_p part[p, j] in a fixed order: 16 strided slices summed
 * sequentially, then a 16-way tree.
 */
function reduceKernel(): Kernel {
  let kern = cache.get("reduce");
  if (kern) return kern;
  kern = defineKernel({
    name: "rmsnorm_gw_reduce",
    params: { nparts: "u32", width: "u32", accumulate: "u32" },
    bindings: { part: "read", gw: "rw" },
    code: `
var<workgroup> sh: array<f32, 256>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
  let j = wid.x * 16u + l.x;
  var s = 0.0;
  if (j < P.width) {
    for (var p = l.y; p < P.nparts; p += 16u) { s = s + part[p * P.width + j]; }
  }
  sh[l.y * 16u + l.x] = s;
  workgroupBarrier();
  for (var off = 8u; off > 0u; off = off >> 1u) {
    if (l.y < off) {
      s = s + sh[(l.y + off) * 16u + l.x];
      sh[l.y * 16u + l.x] = s;
    }
    workgroupBarrier();
  }
  if (l.y == 0u && j < P.width) {
    if (P.accumulate == 1u) { gw[j] = gw[j] + s; } else { gw[j] = s; }
  }
}`,
  });
  cache.set("reduce", kern);
  return kern;
}

function checkArgs(op: string, x: Tensor, w: Tensor, residual: Tensor | null): [number, number] {
  const n = x.shape[x.rank - 1];
  if (x.dtype !== "f32" || w.dtype !== "f32" || w.size !== n || x.rank < 1) {
    throw new Error(`${op}: x ${shapeStr(x.shape)} and weight ${shapeStr(w.shape)} do not match`);
  }
  if (residual && (residual.size !== x.size || residual.dtype !== "f32")) {
    throw new Error(`${op}: residual ${shapeStr(residual.shape)} vs x ${shapeStr(x.shape)}`);
  }
  return [x.size / n, n];
}

function forward(
  x: Tensor,
  res: Tensor | null,
  w: Tensor,
  eps: number,
  rows: number,
  n: number,
): { sum: Tensor | null; y: Tensor; rstd: Tensor } {
  const e = x.engine;
  const y = e.empty(x.shape);
  const rstd = e.empty([rows]);
  const sum = res ? e.empty(x.shape) : null;
  if (rows > 0 && n > 0) {
    const p = plan(n);
    const groups = Math.ceil(rows / p.rpw);
    const b: Record<string, Tensor> = { x, w, y, rstd };
    if (res && sum) {
      b.res = res;
      b.sum = sum;
    }
    e.run(
      forwardKernel(p, res !== null),
      b,
      { rows, n: p.nv, nf: n, eps, groups },
      grid1d(groups, 1),
    );
  }
  return { sum, y, rstd };
}

/**
 * The backward of y = RMSNorm(x): gx (+ gs, the gradient arriving at the
 * pre-norm sum) and gw, each only when asked for. gw goes into `accW` when
 * given (returned as ACCUMULATED).
 */
function backwardCore(
  x: Tensor,
  w: Tensor,
  rstd: Tensor,
  gy: Tensor,
  gs: Tensor | null,
  needX: boolean,
  needW: boolean,
  accW: Tensor | null,
): [Tensor | null, GradOut] {
  if (!needX && !needW) return [null, null];
  const e = x.engine;
  const n = x.shape[x.rank - 1];
  const rows = x.size / n;
  const p = plan(n);
  const steps = needW ? Math.max(1, Math.ceil(rows / (p.rpw * TARGET_GROUPS))) : 1;
  const groups = Math.ceil(rows / (p.rpw * steps));
  const gx = needX ? e.empty(x.shape) : null;
  const part = needW ? e.empty([groups * n]) : null;
  const b: Record<string, Tensor> = { x, w, rstd, gy };
  if (needX && gs) b.gs = gs;
  if (gx) b.gx = gx;
  if (part) b.part = part;
  e.run(
    backwardKernel(p, { gx: needX, gw: needW, gs: needX && gs !== null }),
    b,
    { rows, n: p.nv, nf: n, steps, groups },
    grid1d(groups, 1),
  );
  let gw: GradOut = null;
  if (part) {
    const out = accW ?? e.empty([n]);
    e.run(
      reduceKernel(),
      { part, gw: out },
      { nparts: groups, width: n, accumulate: accW ? 1 : 0 },
      [Math.ceil(n / 16), 1, 1],
    );
    part.dispose();
    gw = accW ? ACCUMULATED : out;
  }
  return [gx, gw];
}

/** y = x · rsqrt(mean(x²) + eps) · w over the last axis; w is [N]. */
export function rmsNorm(x: Tensor, w: Tensor, eps = 1e-5): Tensor {
  const [rows, n] = checkArgs("rmsNorm", x, w, null);
  const { y, rstd } = forward(x, null, w, eps, rows, n);
  const needX = x.requiresGrad, needW = w.requiresGrad;
  record("rmsnorm", [x, w], [y], [x, w, rstd], ([gy], [xs, ws, rs], acc) => {
    if (!gy) return [null, null];
    return backwardCore(xs, ws, rs, gy, null, needX, needW, acc[1]);
  }, { packable: [0], inexact: true }); // x may be kept as f16 (f16 mixed precision); rstd stays f32
  rstd.dispose();
  return y;
}

/**
 * The pre-norm block's residual add and norm in one kernel: returns
 * [s, RMSNorm(s)] with s = x + residual (s = x, sharing its storage, when
 * residual is null). One node with two outputs; gradients may arrive at
 * either or both.
 */
export function addRmsNorm(
  x: Tensor,
  residual: Tensor | null,
  w: Tensor,
  eps = 1e-5,
): [Tensor, Tensor] {
  const [rows, n] = checkArgs("addRmsNorm", x, w, residual);
  const f = forward(x, residual, w, eps, rows, n);
  const sum = f.sum ?? x.view(x.shape);
  const inputs = residual ? [x, residual, w] : [x, w];
  const needS = x.requiresGrad || (residual?.requiresGrad ?? false);
  const needW = w.requiresGrad;
  record("add_rmsnorm", inputs, [sum, f.y], [sum, w, f.rstd], ([gs, gy], [ss, ws, rs], acc) => {
    let gx: Tensor | null = gs;
    let gw: GradOut = null;
    if (gy) [gx, gw] = backwardCore(ss, ws, rs, gy, gs, needS, needW, acc[inputs.length - 1]);
    const gIn = needS ? gx : null;
    return residual ? [gIn, gIn, gw] : [gIn, gw];
  }, { packable: [0], inexact: true }); // s may be kept as f16 (f16 mixed precision); rstd stays f32
  f.rstd.dispose();
  return [sum, f.y];
}
