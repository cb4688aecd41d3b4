/**
 * The quadratic view (flash-style tiling of the quadratic form): one workgroup
 * per (64-row tile, b·h); key sub-tiles of 32 up to the diagonal;
 * A = 1 + s + s²/2 is formed in workgroup memory only, so nothing L×L is ever
 * stored. Backward: dq per row tile, dk and dv per key tile (keys ≥ rows).
 *
 * The row-tile kernels here also compute the chunked view's diagonal tiles
 * (`diag`) and add its inter-chunk state terms (`st`, chunked.ts).
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  cached,
  CHUNK,
  common,
  type Dims,
  dummy,
  DV,
  type Geo,
  oneOr,
  ROW_MASK,
  TKS,
  type View,
} from "./geometry.ts";

// ------------------------------------------------------------------ row-tile output kernel

/**
 * out_i = φ̂(x_i)·S (optional state of row i's chunk) + Σ_{keys j masked} A(x_i, y_j) u_j,
 * normalised by z_i + ε when `norm` (z = the same with u ≡ 1, written to `den`).
 * Grid (row tiles, B·H, value tiles of 64). Thread (tr, tc): rows 4tr..4tr+3,
 * columns 4tc..4tc+3 of the tile.
 */
function outKernel(g: Geo): Kernel {
  return cached(`out_${g.F}`, () =>
    defineKernel({
      name: `la_out_f${g.F}`,
      params: {
        L: "u32",
        H: "u32",
        D: "u32",
        NC: "u32",
        SROW: "u32",
        dir: "u32",
        diag: "u32",
        hasState: "u32",
        norm: "u32",
        eps: "f32",
      },
      bindings: { x: "read", y: "read", u: "read", st: "read", out: "rw", den: "rw" },
      code: /* wgsl */ `${common(g)}${ROW_MASK}
var<workgroup> xsT: array<vec4<f32>, ${(g.NX + 1) * 16}>;
var<workgroup> tab: array<u32, ${g.FEP}>;
// phase 1: Φ tile [16 features][16 row quads] at 0, S tile [16 features][16 col quads] at 256;
// phase 2: A tile [32 keys][16 row quads]; end: z partials [16][16 row quads]
var<workgroup> bufA: array<vec4<f32>, 512>;
var<workgroup> vT: array<vec4<f32>, ${TKS * 16}>;
var<workgroup> ysT: array<vec2<f32>, ${g.F * (TKS / 2)}>;
var<workgroup> zT: array<f32, 16>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rt = wid.x;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let vt = wid.z;
  let tr = lid / 16u;
  let tc = lid % 16u;
  let row0 = rt * ${CHUNK}u;
  for (var i = lid; i < ${CHUNK}u * NXP; i += 256u) {
    let r = i / NXP;
    let f = i % NXP;
    let row = row0 + r;
    var val = 0.0;
    if (row < P.L && f < NX) {
      if (f == 0u) { val = 1.0; } else { val = SC * x[((b * P.L + row) * P.H + h) * F + f - 1u]; }
    }
    xsT[f * 16u + r / 4u][r % 4u] = val;
  }
  for (var e = lid; e < FEP; e += 256u) { tab[e] = pair_of(e); }
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  var zacc = vec4<f32>(0.0);
  let col0 = vt * ${DV}u + tc * 4u;
  if (P.hasState == 1u) {
    let sb = (bh * P.NC + rt) * P.SROW;
    for (var ft = 0u; ft < FEP / 16u; ft++) {
      workgroupBarrier();
      let ab = tab[ft * 16u + tc];
      bufA[tc * 16u + tr] = pair_w(ab) * xsT[(ab & 255u) * 16u + tr] * xsT[(ab >> 8u) * 16u + tr];
      let e = ft * 16u + tr;
      var s4 = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        if (col0 + c < P.D) { s4[c] = st[sb + e * P.D + col0 + c]; }
      }
      bufA[256u + tr * 16u + tc] = s4;
      if (lid < 16u) {
        var zv = 0.0;
        if (P.norm == 1u) { zv = st[sb + FEP * P.D + ft * 16u + lid]; }
        zT[lid] = zv;
      }
      workgroupBarrier();
      for (var f = 0u; f < 16u; f++) {
        let p4 = bufA[f * 16u + tr];
        let sv = bufA[256u + f * 16u + tc];
        acc0 += p4 * sv.x;
        acc1 += p4 * sv.y;
        acc2 += p4 * sv.z;
        acc3 += p4 * sv.w;
      }
      zacc += bufA[tc * 16u + tr] * zT[tc];
    }
  }
  let kr = key_range(rt, P.L, P.dir, P.diag);
  let rows = vec4<u32>(row0 + tr * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
  for (var kt = kr.x; kt < kr.y; kt++) {
    workgroupBarrier();
    let key0 = kt * ${TKS}u;
    for (var i = lid; i < ${TKS}u * F; i += 256u) {
      let kk = i / F;
      let f = i % F;
      let j = key0 + kk;
      var val = 0.0;
      if (j < P.L) { val = SC * y[((b * P.L + j) * P.H + h) * F + f]; }
      ysT[f * ${TKS / 2}u + kk / 2u][kk % 2u] = val;
    }
    for (var i = lid; i < ${TKS}u * 16u; i += 256u) {
      let kk = i / 16u;
      let col = vt * ${DV}u + (i % 16u) * 4u;
      let j = key0 + kk;
      var v4 = vec4<f32>(0.0);
      if (j < P.L) {
        let base = ((b * P.L + j) * P.H + h) * P.D + col;
        for (var c = 0u; c < 4u; c++) {
          if (col + c < P.D) { v4[c] = u[base + c]; }
        }
      }
      vT[i] = v4;
    }
    workgroupBarrier();
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    for (var f = 0u; f < F; f++) {
      let x4 = xsT[(f + 1u) * 16u + tr];
      let y2 = ysT[f * ${TKS / 2}u + tc];
      s0 += x4 * y2.x;
      s1 += x4 * y2.y;
    }
    let j0 = key0 + tc * 2u;
    let a0 = select(vec4<f32>(0.0), 1.0 + s0 + 0.5 * s0 * s0, keep_mask(rows, j0, P.L, P.dir));
    let a1 = select(vec4<f32>(0.0), 1.0 + s1 + 0.5 * s1 * s1, keep_mask(rows, j0 + 1u, P.L, P.dir));
    bufA[(tc * 2u) * 16u + tr] = a0;
    bufA[(tc * 2u + 1u) * 16u + tr] = a1;
    zacc += a0 + a1;
    workgroupBarrier();
    for (var j = 0u; j < ${TKS}u; j++) {
      let a4 = bufA[j * 16u + tr];
      let v4 = vT[j * 16u + tc];
      acc0 += a4 * v4.x;
      acc1 += a4 * v4.y;
      acc2 += a4 * v4.z;
      acc3 += a4 * v4.w;
    }
  }
  if (P.norm == 1u) {
    workgroupBarrier();
    bufA[tc * 16u + tr] = zacc;
    workgroupBarrier();
    var z = vec4<f32>(0.0);
    for (var t = 0u; t < 16u; t++) { z += bufA[t * 16u + tr]; }
    let zd = z + vec4<f32>(P.eps);
    acc0 = acc0 / zd;
    acc1 = acc1 / zd;
    acc2 = acc2 / zd;
    acc3 = acc3 / zd;
    if (vt == 0u && tc == 0u) {
      for (var r = 0u; r < 4u; r++) {
        if (rows[r] < P.L) { den[(b * P.L + rows[r]) * P.H + h] = z[r]; }
      }
    }
  }
  for (var r = 0u; r < 4u; r++) {
    if (rows[r] < P.L) {
      let base = ((b * P.L + rows[r]) * P.H + h) * P.D + col0;
      if (col0 < P.D) { out[base] = acc0[r]; }
      if (col0 + 1u < P.D) { out[base + 1u] = acc1[r]; }
      if (col0 + 2u < P.D) { out[base + 2u] = acc2[r]; }
      if (col0 + 3u < P.D) { out[base + 3u] = acc3[r]; }
    }
  }
}`,
    }));
}

const IKT = 16; // value columns per step of the intra-gradient kernel

/**
 * Intra (tile) term of a query-side gradient: gx_i (+)= √c Σ_{keys j masked}
 * (a_i·b_j + aw_i bw_j)(1 + s_ij) ỹ_j. Grid (row tiles, B·H).
 */
function gradIntraKernel(g: Geo): Kernel {
  const MQ = g.F / 4;
  return cached(`gintra_${g.F}`, () =>
    defineKernel({
      name: `la_grad_intra_f${g.F}`,
      params: {
        L: "u32",
        H: "u32",
        D: "u32",
        dir: "u32",
        diag: "u32",
        awOne: "u32",
        bwOne: "u32",
        accum: "u32",
      },
      bindings: {
        x: "read",
        y: "read",
        a: "read",
        aw: "read",
        bb: "read",
        bw: "read",
        gx: "rw",
      },
      code: /* wgsl */ `${common(g)}${ROW_MASK}
var<workgroup> xsT: array<vec4<f32>, ${g.F * 16}>;
var<workgroup> ysT: array<vec2<f32>, ${g.F * (TKS / 2)}>;
var<workgroup> yK: array<vec4<f32>, ${TKS * MQ}>;
var<workgroup> aT: array<vec4<f32>, ${IKT * 16}>;
var<workgroup> bT: array<vec2<f32>, ${IKT * (TKS / 2)}>;
var<workgroup> dS: array<f32, ${CHUNK * TKS}>;
var<workgroup> awT: array<vec4<f32>, 16>;
var<workgroup> bwT: array<vec2<f32>, ${TKS / 2}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rt = wid.x;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let tr = lid / 16u;
  let tc = lid % 16u;
  let row0 = rt * ${CHUNK}u;
  for (var i = lid; i < ${CHUNK}u * F; i += 256u) {
    let r = i / F;
    let row = row0 + r;
    var val = 0.0;
    if (row < P.L) { val = SC * x[((b * P.L + row) * P.H + h) * F + i % F]; }
    xsT[(i % F) * 16u + r / 4u][r % 4u] = val;
  }
  if (lid < ${CHUNK}u) {
    let row = row0 + lid;
    var val = 0.0;
    if (row < P.L) { ${oneOr("val", "aw", "(b * P.L + row) * P.H + h", "awOne")} }
    awT[lid / 4u][lid % 4u] = val;
  }
  let orow = lid / 4u;
  let mq = lid % 4u;
  var gacc = vec4<f32>(0.0);
  let kr = key_range(rt, P.L, P.dir, P.diag);
  let rows = vec4<u32>(row0 + tr * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
  for (var kt = kr.x; kt < kr.y; kt++) {
    workgroupBarrier();
    let key0 = kt * ${TKS}u;
    for (var i = lid; i < ${TKS}u * F; i += 256u) {
      let kk = i / F;
      let f = i % F;
      let j = key0 + kk;
      var val = 0.0;
      if (j < P.L) { val = SC * y[((b * P.L + j) * P.H + h) * F + f]; }
      ysT[f * ${TKS / 2}u + kk / 2u][kk % 2u] = val;
      yK[kk * ${MQ}u + f / 4u][f % 4u] = val;
    }
    if (lid < ${TKS}u) {
      let j = key0 + lid;
      var val = 0.0;
      if (j < P.L) { ${oneOr("val", "bw", "(b * P.L + j) * P.H + h", "bwOne")} }
      bwT[lid / 2u][lid % 2u] = val;
    }
    var g0 = vec4<f32>(0.0);
    var g1 = vec4<f32>(0.0);
    for (var c0 = 0u; c0 < P.D; c0 += ${IKT}u) {
      workgroupBarrier();
      for (var i = lid; i < ${IKT * CHUNK}u; i += 256u) {
        let r = i / ${IKT}u;
        let cc = i % ${IKT}u;
        let row = row0 + r;
        var val = 0.0;
        if (row < P.L && c0 + cc < P.D) { val = a[((b * P.L + row) * P.H + h) * P.D + c0 + cc]; }
        aT[cc * 16u + r / 4u][r % 4u] = val;
      }
      for (var i = lid; i < ${IKT * TKS}u; i += 256u) {
        let kk = i / ${IKT}u;
        let cc = i % ${IKT}u;
        let j = key0 + kk;
        var val = 0.0;
        if (j < P.L && c0 + cc < P.D) { val = bb[((b * P.L + j) * P.H + h) * P.D + c0 + cc]; }
        bT[cc * ${TKS / 2}u + kk / 2u][kk % 2u] = val;
      }
      workgroupBarrier();
      for (var cc = 0u; cc < ${IKT}u; cc++) {
        let a4 = aT[cc * 16u + tr];
        let b2 = bT[cc * ${TKS / 2}u + tc];
        g0 += a4 * b2.x;
        g1 += a4 * b2.y;
      }
    }
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    for (var f = 0u; f < F; f++) {
      let x4 = xsT[f * 16u + tr];
      let y2 = ysT[f * ${TKS / 2}u + tc];
      s0 += x4 * y2.x;
      s1 += x4 * y2.y;
    }
    let aw4 = awT[tr];
    let bw2 = bwT[tc];
    g0 += aw4 * bw2.x;
    g1 += aw4 * bw2.y;
    let j0 = key0 + tc * 2u;
    let d0 = select(vec4<f32>(0.0), g0 * (1.0 + s0), keep_mask(rows, j0, P.L, P.dir));
    let d1 = select(vec4<f32>(0.0), g1 * (1.0 + s1), keep_mask(rows, j0 + 1u, P.L, P.dir));
    for (var rr = 0u; rr < 4u; rr++) {
      dS[(tr * 4u + rr) * ${TKS}u + tc * 2u] = d0[rr];
      dS[(tr * 4u + rr) * ${TKS}u + tc * 2u + 1u] = d1[rr];
    }
    workgroupBarrier();
    if (mq < ${MQ}u) {
      for (var j = 0u; j < ${TKS}u; j++) {
        gacc += dS[orow * ${TKS}u + j] * yK[j * ${MQ}u + mq];
      }
    }
  }
  let row = row0 + orow;
  if (mq < ${MQ}u && row < P.L) {
    let base = ((b * P.L + row) * P.H + h) * F + mq * 4u;
    for (var c = 0u; c < 4u; c++) {
      var v = SC * gacc[c];
      if (P.accum == 1u) { v += gx[base + c]; }
      gx[base + c] = v;
    }
  }
}`,
    }));
}

export interface OutArgs {
  x: Tensor;
  y: Tensor;
  u: Tensor;
  st: Tensor | null;
  out: Tensor;
  den: Tensor | null;
  dir: 0 | 1;
  diag: boolean;
  eps: number;
}

export function runOut(d: Dims, g: Geo, a: OutArgs): void {
  const e = a.x.engine;
  const NC = Math.ceil(d.L / CHUNK);
  e.run(
    outKernel(g),
    {
      x: a.x,
      y: a.y,
      u: a.u,
      st: a.st ?? dummy(e),
      out: a.out,
      den: a.den ?? dummy(e, 1),
    },
    {
      L: d.L,
      H: d.H,
      D: d.D,
      NC,
      SROW: g.FEP * (d.D + 1),
      dir: a.dir,
      diag: a.diag ? 1 : 0,
      hasState: a.st ? 1 : 0,
      norm: a.den ? 1 : 0,
      eps: a.eps,
    },
    [NC, d.B * d.H, Math.ceil(d.D / DV)],
  );
}

export interface GradArgs {
  x: Tensor;
  y: Tensor;
  a: Tensor;
  aw: Tensor | null;
  b: Tensor;
  bw: Tensor | null;
  dir: 0 | 1;
  diag: boolean;
}

/** The intra-tile gradient term into gx (added to what gx holds when `accum`). */
export function runGradIntra(d: Dims, g: Geo, a: GradArgs, gx: Tensor, accum: boolean): void {
  const e = a.x.engine;
  const NC = Math.ceil(d.L / CHUNK);
  e.run(
    gradIntraKernel(g),
    { x: a.x, y: a.y, a: a.a, aw: a.aw ?? dummy(e), bb: a.b, bw: a.bw ?? dummy(e), gx },
    {
      L: d.L,
      H: d.H,
      D: d.D,
      dir: a.dir,
      diag: a.diag ? 1 : 0,
      awOne: a.aw ? 0 : 1,
      bwOne: a.bw ? 0 : 1,
      accum: accum ? 1 : 0,
    },
    [NC, d.B * d.H],
  );
}

export const quadratic: View = {
  forward(d, g, q, k, v, y, den, eps) {
    runOut(d, g, { x: q, y: k, u: v, st: null, out: y, den, dir: 0, diag: false, eps });
  },
  backward(d, g, [q, k, v], go, gz, eps, want) {
    const e = q.engine;
    let gq: Tensor | null = null, gk: Tensor | null = null, gv: Tensor | null = null;
    if (want[0]) {
      gq = e.empty([d.B, d.L, d.H, d.F]);
      runGradIntra(
        d,
        g,
        { x: q, y: k, a: go, aw: gz, b: v, bw: null, dir: 0, diag: false },
        gq,
        false,
      );
    }
    if (want[1]) {
      gk = e.empty([d.B, d.L, d.H, d.F]);
      runGradIntra(
        d,
        g,
        { x: k, y: q, a: v, aw: null, b: go, bw: gz, dir: 1, diag: false },
        gk,
        false,
      );
    }
    if (want[2]) {
      gv = e.empty([d.B, d.L, d.H, d.D]);
      runOut(d, g, { x: k, y: q, u: go, st: null, out: gv, den: null, dir: 1, diag: false, eps });
    }
    return [gq, gk, gv];
  },
  numerator(d, g, q, k, v, num) {
    runOut(d, g, { x: q, y: k, u: v, st: null, out: num, den: null, dir: 0, diag: false, eps: 0 });
  },
};
