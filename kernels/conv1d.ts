/**
 * Causal depthwise 1-D convolution along time (BaseConv's short conv,
 * `based/models/mixers/convolution.py::BaseConv`) over x [B, L, C] with PyTorch's depthwise weight
 * [C, 1, K]: c[b, t, ch] = Σ_k w[ch, k]·x[b, t + k − (K−1), ch] (+ bias[ch]), x = 0 before t = 0.
 * K ≤ 8 (BaseConv uses 3).
 *
 * Forward and gx: one thread per element (neighbouring threads, neighbouring
 * channels). gx[s, ch] = Σ_k w[ch, k]·gy[s + (K−1) − k, ch], terms past L
 * dropped.
 *
 * gw[ch, k] = Σ_{b,t} gy[t, ch]·x[t + k − (K−1), ch] without atomics: the
 * rows (b, t) are cut into S slices fixed by the shape alone; a workgroup
 * covers 64 channels × 4 row lanes of one slice, each lane sums its rows in
 * order, the lanes are combined in a fixed order and each workgroup writes
 * one partial row part[s, ch·K + k]. `sumRowsInto` (reduce.ts, fixed order)
 * then adds the S partial rows into the gradient (the parameter's buffer when
 * w is a leaf: ACCUMULATED). gbias is `sumRowsInto` of gy. Bit-identical on
 * every run.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { ACCUMULATED, type GradOut, record } from "../tensor/tape.ts";
import { fill } from "./elementwise.ts";
import { sumRowsInto } from "./reduce.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, WG } from "./wgsl.ts";

/** Largest kernel width (taps kept in registers). */
export const MAX_K = 8;
/** Channels per workgroup of the weight-gradient kernel (× 4 row lanes). */
const CH = 64;
const LANES = WG / CH;
/** Workgroups the weight-gradient kernel aims for. */
const TARGET_GROUPS = 1024;

const cache = new Map<string, Kernel>();
function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

/** y[i] = (bias[ch] +) Σ_k w[ch, k]·x[i + (k − (K−1))·C], t + k − (K−1) ≥ 0. */
function forwardKernel(K: number, bias: boolean): Kernel {
  return getKernel(`fwd_${K}_${bias}`, () =>
    defineKernel({
      name: `conv1d_causal_k${K}${bias ? "_bias" : ""}`,
      params: { n: "u32", L: "u32", C: "u32" },
      bindings: bias ? { x: "read", w: "read", bias: "read", y: "rw" } : {
        x: "read",
        w: "read",
        y: "rw",
      },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let ch = i % P.C;
  let t = (i / P.C) % P.L;
  var acc = 0.0;
  for (var k = 0u; k < ${K}u; k++) {
    let back = ${K - 1}u - k;
    if (t >= back) { acc += w[ch * ${K}u + k] * x[i - back * P.C]; }
  }
  y[i] = ${bias ? "bias[ch] + acc" : "acc"};
}`,
    }));
}

/** gx[i] = Σ_k w[ch, k]·gy[i + ((K−1) − k)·C], t + (K−1) − k < L. */
function gradXKernel(K: number): Kernel {
  return getKernel(`gx_${K}`, () =>
    defineKernel({
      name: `conv1d_causal_gx_k${K}`,
      params: { n: "u32", L: "u32", C: "u32" },
      bindings: { gy: "read", w: "read", gx: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let ch = i % P.C;
  let t = (i / P.C) % P.L;
  var acc = 0.0;
  for (var k = 0u; k < ${K}u; k++) {
    let fwd = ${K - 1}u - k;
    if (t + fwd < P.L) { acc += w[ch * ${K}u + k] * gy[i + fwd * P.C]; }
  }
  gx[i] = acc;
}`,
    }));
}

/**
 * Workgroup g = (s, cb): part[s, ch·K + k] = Σ over the rows r of slice s of
 * gy[r, ch]·x[r − (K−1) + k, ch] (same sequence only); lane l of the 4 takes
 * rows beg + l, beg + l + 4, ... in order, then (l0 + l1) + (l2 + l3).
 */
function gradWKernel(K: number): Kernel {
  return getKernel(`gw_${K}`, () =>
    defineKernel({
      name: `conv1d_causal_gw_k${K}`,
      params: { groups: "u32", rows: "u32", L: "u32", C: "u32", CB: "u32", chunk: "u32" },
      bindings: { x: "read", gy: "read", part: "rw" },
      code: /* wgsl */ `
var<workgroup> red: array<f32, ${WG * K}>;
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let cb = g % P.CB;
  let s = g / P.CB;
  let cl = lid % ${CH}u;
  let lane = lid / ${CH}u;
  let ch = cb * ${CH}u + cl;
  var acc: array<f32, ${K}>;
  if (ch < P.C) {
    let beg = s * P.chunk;
    let end = min(P.rows, beg + P.chunk);
    for (var r = beg + lane; r < end; r += ${LANES}u) {
      let t = r % P.L;
      let gv = gy[r * P.C + ch];
      for (var k = 0u; k < ${K}u; k++) {
        let back = ${K - 1}u - k;
        if (t >= back) { acc[k] += gv * x[(r - back) * P.C + ch]; }
      }
    }
  }
  for (var k = 0u; k < ${K}u; k++) { red[k * ${WG}u + lid] = acc[k]; }
  workgroupBarrier();
  if (lane == 0u && ch < P.C) {
    for (var k = 0u; k < ${K}u; k++) {
      let o = k * ${WG}u + cl;
      let v = (red[o] + red[o + ${CH}u]) + (red[o + ${2 * CH}u] + red[o + ${3 * CH}u]);
      part[s * P.C * ${K}u + ch * ${K}u + k] = v;
    }
  }
}`,
    }));
}

function checkArgs(x: Tensor, w: Tensor, bias?: Tensor): [number, number, number, number] {
  if (x.rank !== 3 || x.dtype !== "f32") {
    throw new Error(`causalConv1d: x ${x} is not an f32 [B, L, C] tensor`);
  }
  const [B, L, C] = x.shape;
  if (w.rank !== 3 || w.shape[0] !== C || w.shape[1] !== 1 || w.dtype !== "f32") {
    throw new Error(
      `causalConv1d: weight ${shapeStr(w.shape)} is not [${C}, 1, K] for x ${shapeStr(x.shape)}`,
    );
  }
  const K = w.shape[2];
  if (K < 1 || K > MAX_K) {
    throw new Error(`causalConv1d: kernel width ${K} is not in [1, ${MAX_K}]`);
  }
  if (bias && (bias.size !== C || bias.dtype !== "f32")) {
    throw new Error(`causalConv1d: bias ${shapeStr(bias.shape)} for ${C} channels`);
  }
  return [B, L, C, K];
}

/** Row slices of the weight-gradient reduction: depends only on (rows, C). */
function slices(rows: number, C: number): { S: number; chunk: number; CB: number } {
  const CB = Math.ceil(C / CH);
  let S = Math.max(1, Math.min(Math.ceil(rows / 64), Math.ceil(TARGET_GROUPS / CB)));
  const chunk = Math.ceil(rows / S);
  S = Math.ceil(rows / chunk);
  return { S, chunk, CB };
}

/**
 * Causal depthwise conv of x [B, L, C] with w [C, 1, K] (PyTorch Conv1d
 * groups = C, padding K−1, output truncated to L) plus an optional bias [C].
 * Differentiable in x, w and bias.
 */
export function causalConv1d(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const [B, L, C, K] = checkArgs(x, w, bias);
  const e = x.engine;
  const n = B * L * C;
  const y = e.empty([B, L, C]);
  if (n > 0) {
    const b: Record<string, Tensor> = { x, w, y };
    if (bias) b.bias = bias;
    e.run(forwardKernel(K, !!bias), b, { n, L, C }, grid1d(n));
  }
  const needX = x.requiresGrad, needW = w.requiresGrad, needB = !!bias?.requiresGrad;
  const inputs = bias ? [x, w, bias] : [x, w];
  record("causal_conv1d", inputs, [y], needW ? [x, w] : [w], ([gy], saved, acc) => {
    const res: GradOut[] = inputs.map(() => null);
    if (!gy) return res;
    const ws = needW ? saved[1] : saved[0];
    if (needX) {
      const gx = e.empty([B, L, C]);
      if (n > 0) e.run(gradXKernel(K), { gy, w: ws, gx }, { n, L, C }, grid1d(n));
      res[0] = gx;
    }
    if (needW) {
      const into = acc[1];
      const gw = into ?? e.empty([C, 1, K]);
      const rows = B * L;
      if (rows === 0) {
        if (!into) fill(gw, 0);
      } else {
        const { S, chunk, CB } = slices(rows, C);
        const part = e.empty([S, C * K], "f32", `conv1d weight-gradient partials [${S},${C * K}]`);
        e.run(
          gradWKernel(K),
          { x: saved[0], gy, part },
          { groups: S * CB, rows, L, C, CB, chunk },
          grid1d(S * CB, 1),
        );
        sumRowsInto(gw, part, !!into);
        part.dispose();
      }
      res[1] = into ? ACCUMULATED : gw;
    }
    if (needB && bias) {
      const into = acc[2];
      const gb = into ?? e.empty([C]);
      sumRowsInto(gb, gy, !!into);
      res[2] = into ? ACCUMULATED : gb;
    }
    return res;
  }, { packable: needW ? [0] : [] });
  return y;
}
