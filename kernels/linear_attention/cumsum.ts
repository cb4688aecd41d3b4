/**
 * The cumsum view: a per-token scan over the 273-wide unpacked φ. Forward /
 * dv: one workgroup per (16 state columns, b·h) carrying S (273×16) in
 * registers, partial dot products reduced over 16 feature groups every 8
 * tokens. dq / dk: one workgroup per (feature index m, b·h) carrying the 17
 * state rows {(0,m+1)} ∪ {(m+1, b+1)} × all D+1 columns, reduced over columns
 * and chained through φ on the fly (the symmetry of (a,b) and (b,a) rows
 * makes the chain local to m).
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import {
  cached,
  common,
  type Dims,
  dummy,
  type Geo,
  oneOr,
  unroll,
  type View,
} from "./geometry.ts";

/** Tokens per block of the cumsum scans. */
const TB = 8;

/** y = num / (den + ε) (den broadcast over the last axis). */
const NORMALIZE = defineKernel({
  name: "la_normalize",
  params: { n: "u32", D: "u32", eps: "f32" },
  bindings: { num: "read", den: "read", y: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  y[i] = num[i] / (den[i / P.D] + P.eps);
}`,
});

/**
 * Column scan: state S_t = Σ_{τ ≤ t in scan order} φ(y_τ) u'_τᵀ (273 × 16 columns per
 * workgroup), out_t = φ(x_t)·S_t per column. u' = [u | 1] when `ones` (column D -> den).
 * Grid (column slices of 16, B·H). Thread (fg, cc): features fg + 16r, column cc.
 */
function scanColKernel(g: Geo): Kernel {
  const RU = g.FEUP / 16;
  return cached(`scol_${g.F}`, () =>
    defineKernel({
      name: `la_cumsum_col_f${g.F}`,
      params: { L: "u32", H: "u32", D: "u32", ones: "u32", rev: "u32" },
      bindings: { x: "read", y: "read", u: "read", out: "rw", den: "rw" },
      code: /* wgsl */ `${common(g)}
var<workgroup> xh: array<f32, ${TB * g.NX}>;
var<workgroup> yh: array<f32, ${TB * g.NX}>;
var<workgroup> uu: array<f32, ${TB * 16}>;
var<workgroup> phx: array<f32, ${TB * g.FEUP}>;
var<workgroup> phy: array<f32, ${TB * g.FEUP}>;
var<workgroup> part: array<f32, ${TB * 256}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let cs = wid.x;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let fg = lid / 16u;
  let cc = lid % 16u;
  ${unroll(RU, (r) => `var S${r} = 0.0;`, " ")}
  let nb = (P.L + ${TB - 1}u) / ${TB}u;
  for (var blk = 0u; blk < nb; blk++) {
    workgroupBarrier();
    for (var i = lid; i < ${2 * TB}u * NX; i += 256u) {
      let which = i / (${TB}u * NX);
      let rem = i % (${TB}u * NX);
      let pos = blk * ${TB}u + rem / NX;
      let f = rem % NX;
      var val = 0.0;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        let src = ((b * P.L + tok) * P.H + h) * F + f - 1u;
        if (f == 0u) { val = 1.0; } else if (which == 0u) { val = SC * x[src]; } else { val = SC * y[src]; }
      }
      if (which == 0u) { xh[rem] = val; } else { yh[rem] = val; }
    }
    if (lid < ${TB * 16}u) {
      let pos = blk * ${TB}u + lid / 16u;
      let col = cs * 16u + lid % 16u;
      var val = 0.0;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        if (col < P.D) { val = u[((b * P.L + tok) * P.H + h) * P.D + col]; }
        else if (col == P.D && P.ones == 1u) { val = 1.0; }
      }
      uu[lid] = val;
    }
    workgroupBarrier();
    for (var i = lid; i < ${TB}u * FEUP; i += 256u) {
      let t = i / FEUP;
      let e = i % FEUP;
      let ab = featu_ab(e);
      let w = featu_w(e);
      phx[i] = w * xh[t * NX + (ab & 255u)] * xh[t * NX + (ab >> 8u)];
      phy[i] = w * yh[t * NX + (ab & 255u)] * yh[t * NX + (ab >> 8u)];
    }
    workgroupBarrier();
    for (var t = 0u; t < ${TB}u; t++) {
      let uv = uu[t * 16u + cc];
      let pb = t * FEUP + fg;
      var p0 = 0.0;
      var p1 = 0.0;
      ${
        unroll(
          RU,
          (r) => `S${r} += phy[pb + ${16 * r}u] * uv; p${r % 2} += phx[pb + ${16 * r}u] * S${r};`,
          "\n      ",
        )
      }
      part[t * 256u + lid] = p0 + p1;
    }
    workgroupBarrier();
    if (lid < ${TB * 16}u) {
      let t = lid / 16u;
      let c = lid % 16u;
      var sum = 0.0;
      for (var gi = 0u; gi < 16u; gi++) { sum += part[t * 256u + gi * 16u + c]; }
      let pos = blk * ${TB}u + t;
      let col = cs * 16u + c;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        if (col < P.D) { out[((b * P.L + tok) * P.H + h) * P.D + col] = sum; }
        else if (col == P.D && P.ones == 1u) { den[(b * P.L + tok) * P.H + h] = sum; }
      }
    }
  }
}`,
    }));
}

/**
 * Feature scan for dq / dk: state rows {(0,m+1)} ∪ {(m+1,b+1)} of S_t = Σ φ(y_τ) u'_τᵀ
 * (all D+1 columns, u' = [u | uw]), gX_t = S_t a'_t (a' = [a | aw]), then
 * gx_t[m] = √c (gX_lin + √2 Σ_b gX_(m,b) x̂_{b+1}) — the (b,m) rows equal the (m,b) rows.
 * Grid (F, B·H); workgroup (F+1)·16 threads: feature f, column group cg (columns cg + 16c).
 */
function scanFeatKernel(g: Geo, CPT: number): Kernel {
  const NT = (g.F + 1) * 16;
  const NCP = CPT * 16;
  return cached(`sfeat_${g.F}_${CPT}`, () =>
    defineKernel({
      name: `la_cumsum_feat_f${g.F}_c${CPT}`,
      params: { L: "u32", H: "u32", D: "u32", uwOne: "u32", awOne: "u32", rev: "u32" },
      bindings: { x: "read", y: "read", u: "read", uw: "read", a: "read", aw: "read", gx: "rw" },
      code: /* wgsl */ `${common(g)}
var<workgroup> xh: array<f32, ${TB * g.NX}>;
var<workgroup> yh: array<f32, ${TB * g.NX}>;
var<workgroup> uu: array<f32, ${TB * NCP}>;
var<workgroup> aa: array<f32, ${TB * NCP}>;
var<workgroup> part: array<f32, ${TB * NT}>;
var<workgroup> gX: array<f32, ${TB * (g.F + 1)}>;

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let m = wid.x;
  let bh = wid.y;
  let b = bh / P.H;
  let h = bh % P.H;
  let f = lid / 16u;
  let cg = lid % 16u;
  var fa = 0u;
  var fb = m + 1u;
  var fw = 1.0;
  if (f > 0u) {
    fa = m + 1u;
    fb = f;
    fw = RS2;
  }
  ${unroll(CPT, (c) => `var S${c} = 0.0;`, " ")}
  let nb = (P.L + ${TB - 1}u) / ${TB}u;
  for (var blk = 0u; blk < nb; blk++) {
    workgroupBarrier();
    for (var i = lid; i < ${2 * TB}u * NX; i += ${NT}u) {
      let which = i / (${TB}u * NX);
      let rem = i % (${TB}u * NX);
      let pos = blk * ${TB}u + rem / NX;
      let fi = rem % NX;
      var val = 0.0;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        let src = ((b * P.L + tok) * P.H + h) * F + fi - 1u;
        if (fi == 0u) { val = 1.0; } else if (which == 0u) { val = SC * x[src]; } else { val = SC * y[src]; }
      }
      if (which == 0u) { xh[rem] = val; } else { yh[rem] = val; }
    }
    for (var i = lid; i < ${TB * NCP}u; i += ${NT}u) {
      let pos = blk * ${TB}u + i / ${NCP}u;
      let col = i % ${NCP}u;
      var uv = 0.0;
      var av = 0.0;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        let row = (b * P.L + tok) * P.H + h;
        if (col < P.D) {
          uv = u[row * P.D + col];
          av = a[row * P.D + col];
        } else if (col == P.D) {
          ${oneOr("uv", "uw", "row", "uwOne")}
          ${oneOr("av", "aw", "row", "awOne")}
        }
      }
      uu[i] = uv;
      aa[i] = av;
    }
    workgroupBarrier();
    for (var t = 0u; t < ${TB}u; t++) {
      let phi = fw * yh[t * NX + fa] * yh[t * NX + fb];
      let cb = t * ${NCP}u + cg;
      var p = 0.0;
      ${
        unroll(
          CPT,
          (c) => `S${c} += phi * uu[cb + ${16 * c}u]; p += S${c} * aa[cb + ${16 * c}u];`,
          "\n      ",
        )
      }
      part[t * ${NT}u + lid] = p;
    }
    workgroupBarrier();
    if (lid < ${TB * (g.F + 1)}u) {
      let t = lid / ${g.F + 1}u;
      let ff = lid % ${g.F + 1}u;
      var sum = 0.0;
      for (var gi = 0u; gi < 16u; gi++) { sum += part[t * ${NT}u + ff * 16u + gi]; }
      gX[lid] = sum;
    }
    workgroupBarrier();
    if (lid < ${TB}u) {
      let pos = blk * ${TB}u + lid;
      if (pos < P.L) {
        let tok = select(pos, P.L - 1u - pos, P.rev == 1u);
        var s = 0.0;
        for (var bx = 0u; bx < F; bx++) { s += gX[lid * ${
        g.F + 1
      }u + 1u + bx] * xh[lid * NX + bx + 1u]; }
        gx[((b * P.L + tok) * P.H + h) * F + m] = SC * (gX[lid * ${g.F + 1}u] + SQ2 * s);
      }
    }
  }
}`,
    }));
}

function scanCol(
  d: Dims,
  g: Geo,
  x: Tensor,
  y: Tensor,
  u: Tensor,
  out: Tensor,
  den: Tensor | null,
  rev: 0 | 1,
): void {
  const e = x.engine;
  const ncol = d.D + (den ? 1 : 0);
  e.run(
    scanColKernel(g),
    { x, y, u, out, den: den ?? dummy(e, 1) },
    { L: d.L, H: d.H, D: d.D, ones: den ? 1 : 0, rev },
    [Math.ceil(ncol / 16), d.B * d.H],
  );
}

function scanFeat(
  d: Dims,
  g: Geo,
  args: {
    x: Tensor;
    y: Tensor;
    u: Tensor;
    uw: Tensor | null;
    a: Tensor;
    aw: Tensor | null;
    rev: 0 | 1;
  },
): Tensor {
  const e = args.x.engine;
  const gx = e.empty([d.B, d.L, d.H, d.F]);
  const CPT = Math.ceil((d.D + 1) / 16);
  e.run(
    scanFeatKernel(g, CPT),
    {
      x: args.x,
      y: args.y,
      u: args.u,
      uw: args.uw ?? dummy(e),
      a: args.a,
      aw: args.aw ?? dummy(e),
      gx,
    },
    { L: d.L, H: d.H, D: d.D, uwOne: args.uw ? 0 : 1, awOne: args.aw ? 0 : 1, rev: args.rev },
    [d.F, d.B * d.H],
  );
  return gx;
}

export const cumsum: View = {
  forward(d, g, q, k, v, y, den, eps) {
    const e = q.engine;
    const num = e.empty([d.B, d.L, d.H, d.D]);
    scanCol(d, g, q, k, v, num, den, 0);
    const n = d.B * d.L * d.H * d.D;
    e.run(NORMALIZE, { num, den, y }, { n, D: d.D, eps }, grid1d(n));
    num.dispose();
  },
  backward(d, g, [q, k, v], go, gz, _eps, want) {
    const e = q.engine;
    let gq: Tensor | null = null, gk: Tensor | null = null, gv: Tensor | null = null;
    if (want[0]) gq = scanFeat(d, g, { x: q, y: k, u: v, uw: null, a: go, aw: gz, rev: 0 });
    if (want[1]) gk = scanFeat(d, g, { x: k, y: q, u: go, uw: gz, a: v, aw: null, rev: 1 });
    if (want[2]) {
      gv = e.empty([d.B, d.L, d.H, d.D]);
      scanCol(d, g, k, q, go, gv, null, 1);
    }
    return [gq, gk, gv];
  },
  numerator(d, g, q, k, v, num) {
    scanCol(d, g, q, k, v, num, null, 0);
  },
};
