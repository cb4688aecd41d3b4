/**
 * Sliding-window causal softmax attention (the reference's SlidingAttention,
 * `based/models/mixers/slide_attention.py`; gradients: docs/reference.md), flash-style:
 * query i attends keys max(0, i − floor(W/2)) ≤ j ≤ i with scores scale·q_i·k_j
 * (q and k already rotated). Input packed qkv [B, L, 3, H, Dh]; output
 * [B, L, H, Dh]. No L×L matrix: scores live in workgroup memory one tile at a
 * time; statistics (row max, Σexp, logsumexp) are f32.
 *
 * Forward: one workgroup (256 threads) per (tile of RP query rows, b·h); key
 * tiles of TK over the ≤ RP + W/2 keys the tile can see; online softmax
 * (running max m, sum l, rescaled accumulators). Each row is owned by
 * TPR = 256/RP threads (columns sub + TPR·c), which compute identical row
 * statistics. The per-row logsumexp is saved for the backward.
 * Backward: Δ_i = gO_i·O_i; dq per query tile (over its keys), dk and dv per
 * key tile (over the queries j ≤ i ≤ j + W/2), P recomputed from the saved
 * logsumexp: gS = P ⊙ (gO Vᵀ − Δ). The gradient comes back packed like qkv.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, MAX_GRID } from "./wgsl.ts";

export interface SlidingWindowOptions {
  /** config window_size W: query i attends keys max(0, i − floor(W/2)) ≤ j ≤ i */
  window: number;
  /** score scale, default Dh^-0.5 */
  scale?: number;
  /**
   * Workgroup memory budget of the tiles, in floats (default: 8192, or
   * SMEM_FLOATS_GL on the GL software path). Tiles that fit it are chosen
   * when any does, else the default budget's.
   */
  smemFloats?: number;
}

/** Largest head dimension the kernels are laid out for. */
export const MAX_HEAD_DIM = 128;
/** Workgroup memory the kernels may use (the WebGPU default limit is 16 KiB; llvmpipe has 32). */
const SMEM_FLOATS = 8192;
/**
 * The budget on Mesa's GL path (llvmpipe through EGL): there WebGPU zero-fills
 * workgroup memory with one array constructor per variable, which llvmpipe
 * compiles in time that grows faster than linearly with its size (a kernel
 * with 2,048 vec4 of workgroup memory: 248 s; 512: 25 s; 64: 0.7 s, 2 cores).
 * The 32×32 tiles (4,192–6,400 floats) took minutes each; 16×16 and 16×8 fit
 * 2,048.
 */
export const SMEM_FLOATS_GL = 2048;
const LOWEST = "-3.4028234e38";

interface Tiles {
  /** rows per workgroup (queries, or keys in the dk/dv kernel) */
  R: number;
  /** inner tile (keys, or queries in the dk/dv kernel) */
  T: number;
  TPR: number;
  CPT: number;
}

function tiles(Dh: number, smem: (R: number, T: number) => number, budget: number): Tiles {
  for (const b of [budget, SMEM_FLOATS]) {
    for (const [R, T] of [[32, 32], [32, 16], [16, 16], [16, 8], [8, 8]]) {
      if (smem(R, T) <= b) {
        const TPR = 256 / R;
        return { R, T, TPR, CPT: Math.ceil(Dh / TPR) };
      }
    }
  }
  throw new BasedError(`sliding-window attention: head dim ${Dh} too large`);
}

const unroll = (n: number, f: (i: number) => string, sep = "\n"): string =>
  Array.from({ length: n }, (_, i) => f(i)).join(sep);

function head(Dh: number, t: Tiles): string {
  return /* wgsl */ `
const DH: u32 = ${Dh}u;
const DP: u32 = ${Dh + 1}u;
const R: u32 = ${t.R}u;
const T: u32 = ${t.T}u;
const TPR: u32 = ${t.TPR}u;
const LOWEST: f32 = ${LOWEST};
fn visible(i: u32, j: u32) -> bool {
  return i < P.L && j < P.L && j <= i && j + P.left >= i;
}
`;
}

const PARAMS = { L: "u32", H: "u32", left: "u32", scale: "f32" } as const;

const cache = new Map<string, Kernel>();
function cached(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

const fwdTiles = (Dh: number, b: number) =>
  tiles(Dh, (R, T) => R * (Dh + 1) + T * (Dh + 1) + T * Dh + R * (T + 1), b);
const dqTiles = (Dh: number, b: number) =>
  tiles(Dh, (R, T) => 2 * R * (Dh + 1) + 2 * T * (Dh + 1) + R * (T + 1) + 2 * R, b);
const dkvTiles = (Dh: number, b: number) =>
  tiles(Dh, (R, T) => 2 * R * (Dh + 1) + 2 * T * (Dh + 1) + 2 * R * (T + 1) + 2 * T, b);
/** Tile sizes in kernel names beyond the default (32×32) ones. */
const tileTag = (t: Tiles) => (t.R === 32 && t.T === 32 ? "" : `_r${t.R}t${t.T}`);

function fwdKernel(Dh: number, budget: number): Kernel {
  const t = fwdTiles(Dh, budget);
  return cached(`fwd_${Dh}_${t.R}_${t.T}`, () =>
    defineKernel({
      name: `swa_fwd_d${Dh}${tileTag(t)}`,
      params: PARAMS,
      bindings: { qkv: "read", out: "rw", lse: "rw" },
      code: /* wgsl */ `${head(Dh, t)}
var<workgroup> qs: array<f32, ${t.R * (Dh + 1)}>;
var<workgroup> ks: array<f32, ${t.T * (Dh + 1)}>;
var<workgroup> vs: array<f32, ${t.T * Dh}>;
var<workgroup> ss: array<f32, ${t.R * (t.T + 1)}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let HD = P.H * DH;
  let q0 = wid.x * R;
  for (var i = lid; i < R * DH; i += 256u) {
    let r = i / DH;
    let row = q0 + r;
    var val = 0.0;
    if (row < P.L) { val = qkv[(b * P.L + row) * 3u * HD + h * DH + i % DH]; }
    qs[r * DP + i % DH] = val;
  }
  let row = lid / TPR;
  let sub = lid % TPR;
  var m = LOWEST;
  var l = 0.0;
  ${unroll(t.CPT, (c) => `var acc${c} = 0.0;`, " ")}
  let kstart = select(0u, q0 - P.left, q0 > P.left);
  let kend = min(P.L, q0 + R);
  for (var k0 = kstart; k0 < kend; k0 += T) {
    workgroupBarrier();
    for (var i = lid; i < T * DH; i += 256u) {
      let jj = i / DH;
      let d = i % DH;
      let j = k0 + jj;
      var kv = 0.0;
      var vv = 0.0;
      if (j < P.L) {
        let base = (b * P.L + j) * 3u * HD + h * DH + d;
        kv = qkv[base + HD];
        vv = qkv[base + 2u * HD];
      }
      ks[jj * DP + d] = kv;
      vs[jj * DH + d] = vv;
    }
    workgroupBarrier();
    for (var e = lid; e < R * T; e += 256u) {
      let r = e / T;
      let jj = e % T;
      var sv = LOWEST;
      if (visible(q0 + r, k0 + jj)) {
        var dsum = 0.0;
        for (var d = 0u; d < DH; d++) { dsum += qs[r * DP + d] * ks[jj * DP + d]; }
        sv = P.scale * dsum;
      }
      ss[r * (T + 1u) + jj] = sv;
    }
    workgroupBarrier();
    var mt = LOWEST;
    for (var jj = 0u; jj < T; jj++) { mt = max(mt, ss[row * (T + 1u) + jj]); }
    let mn = max(m, mt);
    let alpha = exp(m - mn);
    l *= alpha;
    ${unroll(t.CPT, (c) => `acc${c} *= alpha;`, " ")}
    for (var jj = 0u; jj < T; jj++) {
      let sv = ss[row * (T + 1u) + jj];
      let p = select(exp(sv - mn), 0.0, sv == LOWEST);
      l += p;
      ${
        unroll(
          t.CPT,
          (c) => `acc${c} += p * vs[jj * DH + min(sub + ${c * t.TPR}u, DH - 1u)];`,
          "\n      ",
        )
      }
    }
    m = mn;
  }
  let i = q0 + row;
  if (i < P.L) {
    let ob = ((b * P.L + i) * P.H + h) * DH;
    ${
        unroll(
          t.CPT,
          (c) => `if (sub + ${c * t.TPR}u < DH) { out[ob + sub + ${c * t.TPR}u] = acc${c} / l; }`,
          "\n    ",
        )
      }
    if (sub == 0u) { lse[(b * P.L + i) * P.H + h] = m + log(l); }
  }
}`,
    }));
}

/** Δ_i = Σ_d gO_id·O_id per row. */
const DELTA = defineKernel({
  name: "swa_delta",
  params: { rows: "u32", Dh: "u32" },
  bindings: { gout: "read", out: "read", delta: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.rows) { return; }
  var s = 0.0;
  for (var d = 0u; d < P.Dh; d++) { s += gout[i * P.Dh + d] * out[i * P.Dh + d]; }
  delta[i] = s;
}`,
});

function dqKernel(Dh: number, budget: number): Kernel {
  const t = dqTiles(Dh, budget);
  return cached(`dq_${Dh}_${t.R}_${t.T}`, () =>
    defineKernel({
      name: `swa_dq_d${Dh}${tileTag(t)}`,
      params: PARAMS,
      bindings: { qkv: "read", gout: "read", lse: "read", delta: "read", gqkv: "rw" },
      code: /* wgsl */ `${head(Dh, t)}
var<workgroup> qs: array<f32, ${t.R * (Dh + 1)}>;
var<workgroup> gos: array<f32, ${t.R * (Dh + 1)}>;
var<workgroup> ks: array<f32, ${t.T * (Dh + 1)}>;
var<workgroup> vs: array<f32, ${t.T * (Dh + 1)}>;
var<workgroup> ds: array<f32, ${t.R * (t.T + 1)}>;
var<workgroup> ls: array<f32, ${t.R}>;
var<workgroup> dl: array<f32, ${t.R}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let HD = P.H * DH;
  let q0 = wid.x * R;
  for (var i = lid; i < R * DH; i += 256u) {
    let r = i / DH;
    let d = i % DH;
    let row = q0 + r;
    var qv = 0.0;
    var gv = 0.0;
    if (row < P.L) {
      qv = qkv[(b * P.L + row) * 3u * HD + h * DH + d];
      gv = gout[((b * P.L + row) * P.H + h) * DH + d];
    }
    qs[r * DP + d] = qv;
    gos[r * DP + d] = gv;
  }
  if (lid < R) {
    let row = q0 + lid;
    var lv = 0.0;
    var dv = 0.0;
    if (row < P.L) {
      lv = lse[(b * P.L + row) * P.H + h];
      dv = delta[(b * P.L + row) * P.H + h];
    }
    ls[lid] = lv;
    dl[lid] = dv;
  }
  let row = lid / TPR;
  let sub = lid % TPR;
  ${unroll(t.CPT, (c) => `var acc${c} = 0.0;`, " ")}
  let kstart = select(0u, q0 - P.left, q0 > P.left);
  let kend = min(P.L, q0 + R);
  for (var k0 = kstart; k0 < kend; k0 += T) {
    workgroupBarrier();
    for (var i = lid; i < T * DH; i += 256u) {
      let jj = i / DH;
      let d = i % DH;
      let j = k0 + jj;
      var kv = 0.0;
      var vv = 0.0;
      if (j < P.L) {
        let base = (b * P.L + j) * 3u * HD + h * DH + d;
        kv = qkv[base + HD];
        vv = qkv[base + 2u * HD];
      }
      ks[jj * DP + d] = kv;
      vs[jj * DP + d] = vv;
    }
    workgroupBarrier();
    for (var e = lid; e < R * T; e += 256u) {
      let r = e / T;
      let jj = e % T;
      var val = 0.0;
      if (visible(q0 + r, k0 + jj)) {
        var sd = 0.0;
        var gp = 0.0;
        for (var d = 0u; d < DH; d++) {
          sd += qs[r * DP + d] * ks[jj * DP + d];
          gp += gos[r * DP + d] * vs[jj * DP + d];
        }
        let p = exp(P.scale * sd - ls[r]);
        val = p * (gp - dl[r]);
      }
      ds[r * (T + 1u) + jj] = val;
    }
    workgroupBarrier();
    for (var jj = 0u; jj < T; jj++) {
      let dv = ds[row * (T + 1u) + jj];
      ${
        unroll(
          t.CPT,
          (c) => `acc${c} += dv * ks[jj * DP + min(sub + ${c * t.TPR}u, DH - 1u)];`,
          "\n      ",
        )
      }
    }
  }
  let i = q0 + row;
  if (i < P.L) {
    let ob = (b * P.L + i) * 3u * HD + h * DH;
    ${
        unroll(
          t.CPT,
          (c) =>
            `if (sub + ${c * t.TPR}u < DH) { gqkv[ob + sub + ${c * t.TPR}u] = P.scale * acc${c}; }`,
          "\n    ",
        )
      }
  }
}`,
    }));
}

function dkvKernel(Dh: number, budget: number): Kernel {
  const t = dkvTiles(Dh, budget);
  return cached(`dkv_${Dh}_${t.R}_${t.T}`, () =>
    defineKernel({
      name: `swa_dkv_d${Dh}${tileTag(t)}`,
      params: PARAMS,
      bindings: { qkv: "read", gout: "read", lse: "read", delta: "read", gqkv: "rw" },
      code: /* wgsl */ `${head(Dh, t)}
var<workgroup> ks: array<f32, ${t.R * (Dh + 1)}>;
var<workgroup> vs: array<f32, ${t.R * (Dh + 1)}>;
var<workgroup> qs: array<f32, ${t.T * (Dh + 1)}>;
var<workgroup> gos: array<f32, ${t.T * (Dh + 1)}>;
var<workgroup> ps: array<f32, ${t.R * (t.T + 1)}>;
var<workgroup> ds: array<f32, ${t.R * (t.T + 1)}>;
var<workgroup> ls: array<f32, ${t.T}>;
var<workgroup> dl: array<f32, ${t.T}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let HD = P.H * DH;
  let k0 = wid.x * R;
  for (var i = lid; i < R * DH; i += 256u) {
    let r = i / DH;
    let d = i % DH;
    let j = k0 + r;
    var kv = 0.0;
    var vv = 0.0;
    if (j < P.L) {
      let base = (b * P.L + j) * 3u * HD + h * DH + d;
      kv = qkv[base + HD];
      vv = qkv[base + 2u * HD];
    }
    ks[r * DP + d] = kv;
    vs[r * DP + d] = vv;
  }
  let key = lid / TPR;
  let sub = lid % TPR;
  ${unroll(t.CPT, (c) => `var ak${c} = 0.0; var av${c} = 0.0;`, "\n  ")}
  let qend = min(P.L, k0 + R + P.left);
  for (var i0 = k0; i0 < qend; i0 += T) {
    workgroupBarrier();
    for (var i = lid; i < T * DH; i += 256u) {
      let qq = i / DH;
      let d = i % DH;
      let row = i0 + qq;
      var qv = 0.0;
      var gv = 0.0;
      if (row < P.L) {
        qv = qkv[(b * P.L + row) * 3u * HD + h * DH + d];
        gv = gout[((b * P.L + row) * P.H + h) * DH + d];
      }
      qs[qq * DP + d] = qv;
      gos[qq * DP + d] = gv;
    }
    if (lid < T) {
      let row = i0 + lid;
      var lv = 0.0;
      var dv = 0.0;
      if (row < P.L) {
        lv = lse[(b * P.L + row) * P.H + h];
        dv = delta[(b * P.L + row) * P.H + h];
      }
      ls[lid] = lv;
      dl[lid] = dv;
    }
    workgroupBarrier();
    for (var e = lid; e < R * T; e += 256u) {
      let kk = e / T;
      let qq = e % T;
      var pv = 0.0;
      var dv = 0.0;
      if (visible(i0 + qq, k0 + kk)) {
        var sd = 0.0;
        var gp = 0.0;
        for (var d = 0u; d < DH; d++) {
          sd += qs[qq * DP + d] * ks[kk * DP + d];
          gp += gos[qq * DP + d] * vs[kk * DP + d];
        }
        pv = exp(P.scale * sd - ls[qq]);
        dv = pv * (gp - dl[qq]);
      }
      ps[kk * (T + 1u) + qq] = pv;
      ds[kk * (T + 1u) + qq] = dv;
    }
    workgroupBarrier();
    for (var qq = 0u; qq < T; qq++) {
      let pv = ps[key * (T + 1u) + qq];
      let dv = ds[key * (T + 1u) + qq];
      ${
        unroll(
          t.CPT,
          (c) => {
            const col = `min(sub + ${c * t.TPR}u, DH - 1u)`;
            return `av${c} += pv * gos[qq * DP + ${col}]; ak${c} += dv * qs[qq * DP + ${col}];`;
          },
          "\n      ",
        )
      }
    }
  }
  let j = k0 + key;
  if (j < P.L) {
    let ob = (b * P.L + j) * 3u * HD + h * DH;
    ${
        unroll(
          t.CPT,
          (c) => {
            const col = `sub + ${c * t.TPR}u`;
            return `if (${col} < DH) { gqkv[ob + HD + ${col}] = P.scale * ak${c}; ` +
              `gqkv[ob + 2u * HD + ${col}] = av${c}; }`;
          },
          "\n    ",
        )
      }
  }
}`,
    }));
}

/**
 * Sliding-window causal attention over packed, rotated qkv [B, L, 3, H, Dh]
 * -> [B, L, H, Dh]. Differentiable (the gradient is packed like qkv).
 */
export function slidingWindowAttention(qkv: Tensor, opts: SlidingWindowOptions): Tensor {
  if (qkv.rank !== 5 || qkv.shape[2] !== 3 || qkv.dtype !== "f32") {
    throw new Error(`slidingWindowAttention: qkv must be f32 [B, L, 3, H, Dh], got ${qkv}`);
  }
  const [B, L, , H, Dh] = qkv.shape;
  if (Dh > MAX_HEAD_DIM) {
    throw new BasedError(`sliding-window attention: head dim ${Dh} over ${MAX_HEAD_DIM}`);
  }
  if (!(opts.window >= 0)) {
    throw new BasedError(`sliding-window attention: window ${opts.window} must be >= 0`);
  }
  if (B * H > MAX_GRID) throw new BasedError(`sliding-window attention: B·H = ${B * H} too large`);
  const left = Math.min(Math.floor(opts.window / 2), L);
  const scale = opts.scale ?? Dh ** -0.5;
  const params = { L, H, left, scale };
  const e = qkv.engine;
  const out = e.empty([B, L, H, Dh]);
  const lse = e.empty([B, L, H]);
  const budget = opts.smemFloats ?? (e.info.softwareGl ? SMEM_FLOATS_GL : SMEM_FLOATS);
  e.run(fwdKernel(Dh, budget), { qkv, out, lse }, params, [
    Math.ceil(L / fwdTiles(Dh, budget).R),
    B * H,
  ]);
  record("sliding_window_attention", [qkv], [out], [qkv, out, lse], ([gout], [qs, os, ls]) => {
    if (!gout) return [null];
    const rows = B * L * H;
    const delta = e.empty([B, L, H]);
    e.run(DELTA, { gout, out: os, delta }, { rows, Dh }, grid1d(rows));
    const g = e.empty(qs.shape);
    const bind = { qkv: qs, gout, lse: ls, delta, gqkv: g };
    e.run(dqKernel(Dh, budget), bind, params, [Math.ceil(L / dqTiles(Dh, budget).R), B * H]);
    e.run(dkvKernel(Dh, budget), bind, params, [Math.ceil(L / dkvTiles(Dh, budget).R), B * H]);
    delta.dispose();
    return [g];
  }, { packable: [0] }); // qkv (out and the log-sum-exp stay f32)
  lse.dispose();
  return out;
}
