/**
 * The chunked view (two-level): chunks of 64 tokens. (1) every chunk's local
 * state ΔS = Σ_j φ̂(k_j)[v_j | 1]ᵀ (160×(D+1)) in parallel, one workgroup per
 * (chunk, b·h, 64 values); (2) an exclusive prefix scan over chunks, one
 * thread per state element; (3) per (chunk, b·h, 64 values): the inter-chunk
 * term φ̂(q_i)·S_n plus the diagonal tile (quadratic.ts's row-tile kernels),
 * normalised. Backward: the same machinery with states S' (prefix, for dq) and
 * R' = Σ_{later} φ̂(q) [go | gz]ᵀ (suffix, for dk and dv) recomputed from q, k,
 * v; memory O(L·160·(D+1)/64) per head for the states, never the 273-wide
 * features of the sequence.
 *
 * The states use the packed symmetric feature map (geometry.ts): the split by
 * order (the pair (0,0); (0, b); the 2nd-order pairs) with the symmetric half
 * of the 2nd-order block folded in, so a state is 160×D instead of 273×D.
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import {
  cached,
  CHUNK,
  common,
  type Dims,
  dummy,
  DV,
  type Geo,
  oneOr,
  unroll,
  type View,
} from "./geometry.ts";
import { runGradIntra, runOut } from "./quadratic.ts";

/** Tokens per step of the chunk-state kernel. */
const STOK = 16;

/**
 * ΔS_n = Σ_{j ∈ chunk n} φ̂(y_j) u_jᵀ (FEP×D, at [bh, n, e·D + d]) and the extra
 * column Σ φ̂(y_j) w_j (at [bh, n, FEP·D + e]); w ≡ 1 when `wOne`.
 * Grid (chunks, B·H, value tiles). Thread (fg, cg): features fg + 16r, columns 4cg..4cg+3.
 */
function stateKernel(g: Geo): Kernel {
  const R = g.FEP / 16;
  return cached(`state_${g.F}`, () =>
    defineKernel({
      name: `la_chunk_state_f${g.F}`,
      params: { L: "u32", H: "u32", D: "u32", NC: "u32", SROW: "u32", wOne: "u32" },
      bindings: { y: "read", u: "read", w: "read", st: "rw" },
      code: /* wgsl */ `${common(g)}
var<workgroup> ysh: array<f32, ${STOK * (g.NX + 1)}>;
var<workgroup> tab: array<u32, ${g.FEP}>;
var<workgroup> phi: array<f32, ${STOK * g.FEP}>;
var<workgroup> uT: array<vec4<f32>, ${STOK * 16}>;
var<workgroup> wT: array<f32, ${STOK}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = wid.x;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let vt = wid.z;
  let cg = lid % 16u;
  let fg = lid / 16u;
  for (var e = lid; e < FEP; e += 256u) { tab[e] = pair_of(e); }
  ${unroll(R, (r) => `var acc${r} = vec4<f32>(0.0);`)}
  var wacc = 0.0;
  let t0 = n * ${CHUNK}u;
  let t1 = min(P.L, t0 + ${CHUNK}u);
  for (var s0 = t0; s0 < t1; s0 += ${STOK}u) {
    workgroupBarrier();
    for (var i = lid; i < ${STOK}u * NXP; i += 256u) {
      let j = s0 + i / NXP;
      let f = i % NXP;
      var val = 0.0;
      if (j < t1 && f < NX) {
        if (f == 0u) { val = 1.0; } else { val = SC * y[((b * P.L + j) * P.H + h) * F + f - 1u]; }
      }
      ysh[i] = val;
    }
    {
      let j = s0 + lid / 16u;
      let col = vt * ${DV}u + (lid % 16u) * 4u;
      var v4 = vec4<f32>(0.0);
      if (j < t1) {
        let base = ((b * P.L + j) * P.H + h) * P.D + col;
        for (var c = 0u; c < 4u; c++) {
          if (col + c < P.D) { v4[c] = u[base + c]; }
        }
      }
      uT[lid] = v4;
    }
    if (lid < ${STOK}u) {
      let j = s0 + lid;
      var wv = 0.0;
      if (j < t1) { ${oneOr("wv", "w", "(b * P.L + j) * P.H + h", "wOne")} }
      wT[lid] = wv;
    }
    workgroupBarrier();
    for (var i = lid; i < ${STOK}u * FEP; i += 256u) {
      let jj = i / FEP;
      let ab = tab[i % FEP];
      phi[i] = pair_w(ab) * ysh[jj * NXP + (ab & 255u)] * ysh[jj * NXP + (ab >> 8u)];
    }
    workgroupBarrier();
    for (var jj = 0u; jj < ${STOK}u; jj++) {
      let u4 = uT[jj * 16u + cg];
      let pb = jj * FEP + fg;
      ${unroll(R, (r) => `acc${r} += phi[pb + ${16 * r}u] * u4;`, "\n      ")}
      if (lid < FEP) { wacc += phi[jj * FEP + lid] * wT[jj]; }
    }
  }
  let sb = (bh * P.NC + n) * P.SROW;
  let col = vt * ${DV}u + cg * 4u;
  for (var c = 0u; c < 4u; c++) {
    if (col + c < P.D) {
      ${
        unroll(
          R,
          (r) => `st[sb + (fg + ${16 * r}u) * P.D + col + c] = acc${r}[c];`,
          "\n      ",
        )
      }
    }
  }
  if (vt == 0u && lid < FEP) { st[sb + FEP * P.D + lid] = wacc; }
}`,
    }));
}

/** In-place exclusive prefix (rev = 0) or suffix (rev = 1) sum over the chunk axis. */
const SCAN = defineKernel({
  name: "la_chunk_scan",
  params: { total: "u32", NC: "u32", SROW: "u32", rev: "u32" },
  bindings: { st: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.total) { return; }
  let base = (i / P.SROW) * P.NC * P.SROW + i % P.SROW;
  // blocks of 8 chunks: the 8 loads are issued before the dependent stores, so
  // they are in flight together (one at a time was latency-bound: ~2 ms at
  // B8 H16 L2048 for ~0.1 ms of traffic)
  var acc = 0.0;
  for (var n0 = 0u; n0 < P.NC; n0 += 8u) {
    var t: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
      let n = n0 + j;
      if (n < P.NC) { t[j] = st[base + select(n, P.NC - 1u - n, P.rev == 1u) * P.SROW]; }
    }
    for (var j = 0u; j < 8u; j++) {
      let n = n0 + j;
      if (n < P.NC) {
        st[base + select(n, P.NC - 1u - n, P.rev == 1u) * P.SROW] = acc;
        acc += t[j];
      }
    }
  }
}`,
});

const GR = 32; // rows per workgroup of the state-gradient kernel
const GKT = 8; // value columns per step of the state-gradient kernel

/**
 * State term of a query-side gradient: gφ̂_i = S a_i + Z aw_i (FEP values per row),
 * chained through φ̂: gx_i = √c · Σ_e gφ̂_ie ∂φ̂_e/∂x̂(x_i). Writes gx (not accumulated).
 * Grid (ceil(L/32), B·H); rows of tile t lie in chunk t/2.
 */
function gradStateKernel(g: Geo): Kernel {
  const R = g.FEP / 32;
  return cached(`gstate_${g.F}`, () =>
    defineKernel({
      name: `la_grad_state_f${g.F}`,
      params: { L: "u32", H: "u32", D: "u32", NC: "u32", SROW: "u32", awOne: "u32" },
      bindings: { x: "read", a: "read", aw: "read", st: "read", gx: "rw" },
      code: /* wgsl */ `${common(g)}
var<workgroup> xsT: array<vec4<f32>, ${(g.NX + 1) * (GR / 4)}>;
var<workgroup> aT: array<vec4<f32>, ${GKT * (GR / 4)}>;
var<workgroup> sK: array<f32, ${GKT * g.FEP}>;
var<workgroup> stage: array<f32, ${GR * g.FEP}>;
var<workgroup> awT: array<vec4<f32>, ${GR / 4}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gt = wid.x;
  let n = gt / ${CHUNK / GR}u;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let row0 = gt * ${GR}u;
  let tr = lid / 32u;
  let tc = lid % 32u;
  for (var i = lid; i < ${GR}u * NXP; i += 256u) {
    let r = i / NXP;
    let f = i % NXP;
    let row = row0 + r;
    var val = 0.0;
    if (row < P.L && f < NX) {
      if (f == 0u) { val = 1.0; } else { val = SC * x[((b * P.L + row) * P.H + h) * F + f - 1u]; }
    }
    xsT[f * ${GR / 4}u + r / 4u][r % 4u] = val;
  }
  if (lid < ${GR}u) {
    let row = row0 + lid;
    var val = 0.0;
    if (row < P.L) { ${oneOr("val", "aw", "(b * P.L + row) * P.H + h", "awOne")} }
    awT[lid / 4u][lid % 4u] = val;
  }
  ${unroll(R, (r) => `var acc${r} = vec4<f32>(0.0);`)}
  let sb = (bh * P.NC + n) * P.SROW;
  for (var c0 = 0u; c0 < P.D; c0 += ${GKT}u) {
    workgroupBarrier();
    {
      let r = lid / ${GKT}u;
      let cc = lid % ${GKT}u;
      let row = row0 + r;
      var val = 0.0;
      if (row < P.L && c0 + cc < P.D) { val = a[((b * P.L + row) * P.H + h) * P.D + c0 + cc]; }
      aT[cc * ${GR / 4}u + r / 4u][r % 4u] = val;
    }
    for (var i = lid; i < ${GKT}u * FEP; i += 256u) {
      let e = i / ${GKT}u;
      let cc = i % ${GKT}u;
      var val = 0.0;
      if (c0 + cc < P.D) { val = st[sb + e * P.D + c0 + cc]; }
      sK[cc * FEP + e] = val;
    }
    workgroupBarrier();
    for (var cc = 0u; cc < ${GKT}u; cc++) {
      let a4 = aT[cc * ${GR / 4}u + tr];
      ${unroll(R, (r) => `acc${r} += a4 * sK[cc * FEP + tc + ${32 * r}u];`, "\n      ")}
    }
  }
  let aw4 = awT[tr];
  ${unroll(R, (r) => `acc${r} += aw4 * st[sb + FEP * P.D + tc + ${32 * r}u];`, "\n  ")}
  for (var rr = 0u; rr < 4u; rr++) {
    let sbase = (tr * 4u + rr) * FEP + tc;
    ${unroll(R, (r) => `stage[sbase + ${32 * r}u] = acc${r}[rr];`, "\n    ")}
  }
  workgroupBarrier();
  for (var p = lid; p < ${GR}u * F; p += 256u) {
    let r = p / F;
    let m = p % F + 1u;
    var gsum = 0.0;
    for (var bx = 0u; bx < NX; bx++) {
      let xb = xsT[bx * ${GR / 4}u + r / 4u][r % 4u];
      gsum += stage[r * FEP + pidx(m, bx)] * select(1.0, SQ2, bx == m) * xb;
    }
    let row = row0 + r;
    if (row < P.L) { gx[((b * P.L + row) * P.H + h) * F + m - 1u] = SC * gsum; }
  }
}`,
    }));
}

/** Exclusive prefix (dir 0) or suffix (dir 1) chunk states Σ φ̂(y) [u | w]ᵀ. */
function chunkStates(d: Dims, g: Geo, y: Tensor, u: Tensor, w: Tensor | null, dir: 0 | 1) {
  const e = y.engine;
  const NC = Math.ceil(d.L / CHUNK);
  const SROW = g.FEP * (d.D + 1);
  const st = e.empty([d.B * d.H, NC, SROW], "f32", "linear-attention chunk states");
  e.run(
    stateKernel(g),
    { y, u, w: w ?? dummy(e), st },
    { L: d.L, H: d.H, D: d.D, NC, SROW, wOne: w ? 0 : 1 },
    [NC, d.B * d.H, Math.ceil(d.D / DV)],
  );
  const total = d.B * d.H * SROW;
  e.run(SCAN, { st }, { total, NC, SROW, rev: dir }, grid1d(total));
  return st;
}

/** The state term of a query-side gradient into gx (overwritten). */
function runGradState(
  d: Dims,
  g: Geo,
  a: { x: Tensor; a: Tensor; aw: Tensor | null; st: Tensor },
  gx: Tensor,
): void {
  const e = a.x.engine;
  const NC = Math.ceil(d.L / CHUNK);
  e.run(
    gradStateKernel(g),
    { x: a.x, a: a.a, aw: a.aw ?? dummy(e), st: a.st, gx },
    { L: d.L, H: d.H, D: d.D, NC, SROW: g.FEP * (d.D + 1), awOne: a.aw ? 0 : 1 },
    [Math.ceil(d.L / GR), d.B * d.H],
  );
}

export const chunked: View = {
  forward(d, g, q, k, v, y, den, eps) {
    const st = chunkStates(d, g, k, v, null, 0);
    runOut(d, g, { x: q, y: k, u: v, st, out: y, den, dir: 0, diag: true, eps });
    st.dispose();
  },
  backward(d, g, [q, k, v], go, gz, eps, want) {
    const e = q.engine;
    let gq: Tensor | null = null, gk: Tensor | null = null, gv: Tensor | null = null;
    if (want[0]) {
      const st = chunkStates(d, g, k, v, null, 0);
      gq = e.empty([d.B, d.L, d.H, d.F]);
      runGradState(d, g, { x: q, a: go, aw: gz, st }, gq);
      runGradIntra(
        d,
        g,
        { x: q, y: k, a: go, aw: gz, b: v, bw: null, dir: 0, diag: true },
        gq,
        true,
      );
      st.dispose();
    }
    if (want[1] || want[2]) {
      const st = chunkStates(d, g, q, go, gz, 1);
      if (want[1]) {
        gk = e.empty([d.B, d.L, d.H, d.F]);
        runGradState(d, g, { x: k, a: v, aw: null, st }, gk);
        runGradIntra(
          d,
          g,
          { x: k, y: q, a: v, aw: null, b: go, bw: gz, dir: 1, diag: true },
          gk,
          true,
        );
      }
      if (want[2]) {
        gv = e.empty([d.B, d.L, d.H, d.D]);
        runOut(d, g, { x: k, y: q, u: go, st, out: gv, den: null, dir: 1, diag: true, eps });
      }
      st.dispose();
    }
    return [gq, gk, gv];
  },
  numerator(d, g, q, k, v, num) {
    const st = chunkStates(d, g, k, v, null, 0);
    runOut(d, g, { x: q, y: k, u: v, st, out: num, den: null, dir: 0, diag: true, eps: 0 });
    st.dispose();
  },
};
