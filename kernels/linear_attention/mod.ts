/**
 * Based linear attention with the Taylor feature map (spec §2.6, §3): three
 * training views, forward and backward, and the recurrent (generation) view.
 *
 *   y_i = (Σ_{j≤i} A_ij v_j) / (Σ_{j≤i} A_ij + ε),  A_ij = 1 + s + s²/2,  s = q_i·k_j/√F
 *
 * Layout: token-major, as the projections produce it: q, k: [B, L, H, F],
 * v, y: [B, L, H, D]. Every accumulator (numerators, denominators, states) is
 * f32; every reduction has a fixed order (bit-reproducible).
 *
 * Notation used by the kernels: x̂ = [1, √c·x] (NX = F+1 entries, c = 1/√F).
 * Every Taylor feature is w·x̂_α·x̂_β: φ(q)·φ(k) = 1 + s + s²/2. The chunked
 * view's state GEMMs use the symmetric ("packed") form of the map:
 * the FE = NX(NX+1)/2 = 153 pairs α ≤ β (w = 1/√2 on the diagonal α = β ≥ 1,
 * else 1), padded to FEP = 160. It is the §3.3(b) split by order (H0/Z0: the
 * pair (0,0); H1/Z1: (0, b); H2/Z2: the 2nd-order pairs) with the symmetric
 * half of H2 folded in, so the state is 160×D instead of 273×D. The cumsum
 * view uses the unpacked 273-wide φ of the reference.
 *
 * Views:
 * - quadratic (§3.1, flash-style tiling of the quadratic form, §3.3(a)): one
 *   workgroup per (64-row tile, b·h); key sub-tiles of 32 up to the diagonal;
 *   A = 1 + s + s²/2 is formed in workgroup memory only, so nothing L×L is ever
 *   stored. Backward: dq per row tile, dk and dv per key tile (keys ≥ rows).
 * - chunked (§3.3(b), two-level): chunks of 64 tokens. (1) every chunk's local
 *   state ΔS = Σ_j φ̂(k_j)[v_j | 1]ᵀ (160×(D+1)) in parallel, one workgroup per
 *   (chunk, b·h, 64 values); (2) an exclusive prefix scan over chunks, one
 *   thread per state element; (3) per (chunk, b·h, 64 values): the inter-chunk
 *   term φ̂(q_i)·S_n plus the diagonal tile, normalised. Backward: the same
 *   machinery with states S' (prefix, for dq) and R' = Σ_{later} φ̂(q) [go | gz]ᵀ
 *   (suffix, for dk and dv) recomputed from q, k, v; memory O(L·160·(D+1)/64)
 *   per head for the states, never the 273-wide features of the sequence.
 * - cumsum (§3.2): a per-token scan over the 273-wide unpacked φ. Forward /
 *   dv: one workgroup per (16 state columns, b·h) carrying S (273×16) in
 *   registers, partial dot products reduced over 16 feature groups every 8
 *   tokens. dq / dk: one workgroup per (feature index m, b·h) carrying the 17
 *   state rows {(0,m+1)} ∪ {(m+1, b+1)} × all D+1 columns, reduced over columns
 *   and chained through φ on the fly (the symmetry of (a,b) and (b,a) rows
 *   makes the chain local to m).
 *
 * All backwards follow spec §3.0: with r_i = 1/(z_i + ε), go_i = gy_i·r_i,
 * gz_i = −(gy_i·y_i)·r_i, the augmented vectors v' = [v | 1], g' = [go | gz]
 * turn the normalised attention into an un-normalised one with D+1 columns.
 */
import { defineKernel, type Engine, engine, type Kernel } from "../../tensor/engine.ts";
import { BasedError } from "../../tensor/errors.ts";
import { keep, shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { record } from "../../tensor/tape.ts";
import { fill } from "../elementwise.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, MAX_GRID } from "../wgsl.ts";

export type LinearAttentionView = "quadratic" | "chunked" | "cumsum";

const VIEW_NAMES: Record<string, LinearAttentionView> = {
  quadratic: "quadratic",
  chunked: "chunked",
  cumsum: "cumsum",
  fla_parallel: "chunked",
  fla_chunk: "chunked",
  linear: "cumsum",
};

/** Maps a configured `parallel_implementation` (or our own view name) to a view. */
export function resolveView(name: string): LinearAttentionView {
  const v = VIEW_NAMES[name];
  if (!v) {
    throw new BasedError(
      `unknown linear-attention view '${name}'`,
      `valid: ${Object.keys(VIEW_NAMES).join(", ")}`,
    );
  }
  return v;
}

export interface LinearAttentionOptions {
  view: LinearAttentionView;
  /** added to the denominator; default 1e-12 */
  eps?: number;
  /** q/k width; checked against the shapes when given */
  featureDim?: number;
  /**
   * false: the numerator alone, Σ_{j≤i} A_ij v_j (fla's use_normalize=False);
   * default true
   */
  normalize?: boolean;
}

/** Chunk length of the chunked view = row tile of the quadratic view. */
export const CHUNK = 64;
/** Key sub-tile of the row-tile kernels. */
const TKS = 32;
/** Value columns per workgroup of the state and output kernels. */
const DV = 64;
/** Tokens per step of the chunk-state kernel. */
const STOK = 16;
/** Tokens per block of the cumsum scans. */
const TB = 8;

// ------------------------------------------------------------------ geometry and WGSL

interface Geo {
  F: number;
  /** entries of x̂ = [1, √c x] */
  NX: number;
  /** packed (symmetric) features and their padding to a multiple of 32 */
  FE: number;
  FEP: number;
  /** unpacked features 1+F+F² and their padding to a multiple of 16 */
  FEU: number;
  FEUP: number;
}

function geo(F: number): Geo {
  const NX = F + 1;
  const FE = (NX * (NX + 1)) / 2;
  const FEU = 1 + F + F * F;
  return { F, NX, FE, FEP: Math.ceil(FE / 32) * 32, FEU, FEUP: Math.ceil(FEU / 16) * 16 };
}

const f32 = (x: number): string => {
  const s = Math.fround(x).toPrecision(9);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
};

const unroll = (n: number, f: (i: number) => string, sep = "\n"): string =>
  Array.from({ length: n }, (_, i) => f(i)).join(sep);

/** `v = 1` when the flag says the binding is a placeholder, else `v = arr[idx]` (no stray load). */
const oneOr = (v: string, arr: string, idx: string, flag: string): string =>
  `if (P.${flag} == 1u) { ${v} = 1.0; } else { ${v} = ${arr}[${idx}]; }`;

/** Constants and the feature-index helpers shared by the kernels of one F. */
function common(g: Geo): string {
  return /* wgsl */ `
const F: u32 = ${g.F}u;
const NX: u32 = ${g.NX}u;
const NXP: u32 = ${g.NX + 1}u;
const FEP: u32 = ${g.FEP}u;
const FEU: u32 = ${g.FEU}u;
const FEUP: u32 = ${g.FEUP}u;
const SC: f32 = ${f32(Math.pow(g.F, -0.25))};
const RS2: f32 = ${f32(Math.SQRT1_2)};
const SQ2: f32 = ${f32(Math.SQRT2)};

// packed feature e -> (a, b), a <= b, upper triangle of x̂x̂ᵀ row-major; padding -> (NX, NX),
// the zero slot of x̂
fn pair_of(e: u32) -> u32 {
  var a = 0u;
  var r = e;
  loop {
    if (a >= NX) { break; }
    let len = NX - a;
    if (r < len) { return a | ((a + r) << 8u); }
    r -= len;
    a += 1u;
  }
  return NX | (NX << 8u);
}
fn pair_w(ab: u32) -> f32 {
  let a = ab & 255u;
  return select(1.0, RS2, a == (ab >> 8u) && a > 0u);
}
// packed index of the pair {a, b}
fn pidx(a: u32, b: u32) -> u32 {
  let lo = min(a, b);
  let hi = max(a, b);
  return lo * (2u * NX + 1u - lo) / 2u + hi - lo;
}
// unpacked feature e of [1, x/F^¼, vec(xxᵀ)/(√2√F)] -> (a, b) of x̂; weight featu_w
fn featu_ab(e: u32) -> u32 {
  if (e == 0u) { return 0u; }
  if (e <= F) { return e << 8u; }
  if (e >= FEU) { return 0u; }
  let p = e - 1u - F;
  return (p / F + 1u) | ((p % F + 1u) << 8u);
}
fn featu_w(e: u32) -> f32 {
  if (e <= F) { return 1.0; }
  return select(0.0, RS2, e < FEU);
}
`;
}

const ROW_MASK = /* wgsl */ `
// A = 1 + s + s²/2 (or the value given) where the causal mask keeps (row, key)
fn keep_mask(rows: vec4<u32>, j: u32, L: u32, dir: u32) -> vec4<bool> {
  let ok = (rows < vec4<u32>(L)) & vec4<bool>(j < L);
  if (dir == 0u) { return ok & (vec4<u32>(j) <= rows); }
  return ok & (vec4<u32>(j) >= rows);
}
// key sub-tiles [kt0, kt1) of row tile rt: up to the diagonal (dir 0) or from it (dir 1)
fn key_range(rt: u32, L: u32, dir: u32, diag: u32) -> vec2<u32> {
  let nks = (L + ${TKS - 1}u) / ${TKS}u;
  let per = ${CHUNK / TKS}u;
  if (dir == 0u) {
    return vec2<u32>(select(0u, rt * per, diag == 1u), min(nks, (rt + 1u) * per));
  }
  return vec2<u32>(rt * per, select(nks, min(nks, (rt + 1u) * per), diag == 1u));
}
`;

const cache = new Map<string, Kernel>();

function cached(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

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

// ------------------------------------------------------------------ chunk states and scan

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

// ------------------------------------------------------------------ gradient kernels

const GR = 32; // rows per workgroup of the state-gradient kernel
const GKT = 8; // value columns per step of the state-gradient kernel
const IKT = 16; // value columns per step of the intra-gradient kernel

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

/** go = gy·r, gz = −(gy·y)·r with r = 1/(den + ε), one thread per row. */
const PREP = defineKernel({
  name: "la_bwd_prep",
  params: { rows: "u32", D: "u32", eps: "f32" },
  bindings: { gy: "read", y: "read", den: "read", go: "rw", gz: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.rows) { return; }
  let r = 1.0 / (den[i] + P.eps);
  var d = 0.0;
  for (var c = 0u; c < P.D; c++) {
    let g = gy[i * P.D + c];
    d += g * y[i * P.D + c];
    go[i * P.D + c] = g * r;
  }
  gz[i] = -d * r;
}`,
});

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

// ------------------------------------------------------------------ cumsum scans

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

// ------------------------------------------------------------------ feature map

function phiKernel(g: Geo): Kernel {
  return cached(`phi_${g.F}`, () =>
    defineKernel({
      name: `la_phi_f${g.F}`,
      params: { n: "u32" },
      bindings: { x: "read", out: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
fn xhat(row: u32, a: u32) -> f32 {
  if (a == 0u) { return 1.0; }
  return SC * x[row * F + a - 1u];
}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  let row = i / FEU;
  let e = i % FEU;
  let ab = featu_ab(e);
  out[i] = featu_w(e) * xhat(row, ab & 255u) * xhat(row, ab >> 8u);
}`,
    }));
}

function phiBwdKernel(g: Geo): Kernel {
  return cached(`phib_${g.F}`, () =>
    defineKernel({
      name: `la_phi_bwd_f${g.F}`,
      params: { n: "u32" },
      bindings: { x: "read", gphi: "read", gx: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  let row = i / F;
  let a = i % F;
  let gb = row * FEU;
  var s = 0.0;
  for (var bx = 0u; bx < F; bx++) {
    s += (gphi[gb + 1u + F + a * F + bx] + gphi[gb + 1u + F + bx * F + a]) * SC * x[row * F + bx];
  }
  gx[i] = SC * (gphi[gb + 1u + a] + RS2 * s);
}`,
    }));
}

// ------------------------------------------------------------------ recurrent view

function prefillKernel(g: Geo): Kernel {
  return cached(`prefill_${g.F}`, () =>
    defineKernel({
      name: `la_prefill_f${g.F}`,
      params: { total: "u32", L: "u32", H: "u32", D: "u32" },
      bindings: { k: "read", v: "read", kv: "rw", ks: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.total) { return; }
  let e = i % FEU;
  let rest = i / FEU;
  let d = rest % (P.D + 1u);
  let bh = rest / (P.D + 1u);
  let b = bh / P.H;
  let h = bh % P.H;
  let ab = featu_ab(e);
  let fa = ab & 255u;
  let fb = ab >> 8u;
  let w = featu_w(e);
  var sum = 0.0;
  for (var t = 0u; t < P.L; t++) {
    let kb = ((b * P.L + t) * P.H + h) * F;
    var xa = 1.0;
    var xb = 1.0;
    if (fa > 0u) { xa = SC * k[kb + fa - 1u]; }
    if (fb > 0u) { xb = SC * k[kb + fb - 1u]; }
    var val = 1.0;
    if (d < P.D) { val = v[((b * P.L + t) * P.H + h) * P.D + d]; }
    sum += w * xa * xb * val;
  }
  if (d < P.D) { kv[(bh * P.D + d) * FEU + e] += sum; } else { ks[bh * FEU + e] += sum; }
}`,
    }));
}

function stepKernel(g: Geo, D: number): Kernel {
  return cached(`step_${g.F}_${D}`, () =>
    defineKernel({
      name: `la_step_f${g.F}_d${D}`,
      params: { H: "u32", eps: "f32" },
      bindings: { q: "read", k: "read", v: "read", kv: "rw", ks: "rw", y: "rw" },
      code: /* wgsl */ `${common(g)}
const D: u32 = ${D}u;
var<workgroup> pq: array<f32, ${g.FEU}>;
var<workgroup> pk: array<f32, ${g.FEU}>;
var<workgroup> res: array<f32, ${D + 1}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.x;
  for (var e = lid; e < FEU; e += 256u) {
    let ab = featu_ab(e);
    let fa = ab & 255u;
    let fb = ab >> 8u;
    var qa = 1.0;
    var qb = 1.0;
    var ka = 1.0;
    var kb = 1.0;
    if (fa > 0u) { qa = SC * q[bh * F + fa - 1u]; ka = SC * k[bh * F + fa - 1u]; }
    if (fb > 0u) { qb = SC * q[bh * F + fb - 1u]; kb = SC * k[bh * F + fb - 1u]; }
    pq[e] = featu_w(e) * qa * qb;
    pk[e] = featu_w(e) * ka * kb;
  }
  workgroupBarrier();
  for (var d = lid; d <= D; d += 256u) {
    var acc = 0.0;
    if (d < D) {
      let vv = v[bh * D + d];
      let base = (bh * D + d) * FEU;
      for (var e = 0u; e < FEU; e++) {
        let s = kv[base + e] + vv * pk[e];
        kv[base + e] = s;
        acc += s * pq[e];
      }
    } else {
      for (var e = 0u; e < FEU; e++) {
        let s = ks[bh * FEU + e] + pk[e];
        ks[bh * FEU + e] = s;
        acc += s * pq[e];
      }
    }
    res[d] = acc;
  }
  workgroupBarrier();
  for (var d = lid; d < D; d += 256u) { y[bh * D + d] = res[d] / (res[D] + P.eps); }
}`,
    }));
}

// ------------------------------------------------------------------ host side

const dummies = new WeakMap<Engine, Tensor[]>();

/**
 * A tiny tensor bound where a kernel's flag says the binding is unused (index 0
 * for read bindings, 1 for a written one: one buffer may not be bound twice
 * when either binding writes).
 */
function dummy(e: Engine, which: 0 | 1 = 0): Tensor {
  let ts = dummies.get(e);
  if (!ts || ts.some((t) => t.disposed)) {
    ts = [0, 1].map(() => keep(fill(e.empty([4]), 0)));
    dummies.set(e, ts);
  }
  return ts[which];
}

interface Dims {
  B: number;
  L: number;
  H: number;
  F: number;
  D: number;
}

function checkGeometry(d: Dims): Geo {
  if (d.F < 4 || d.F > 16 || d.F % 4 !== 0) {
    throw new BasedError(
      `linear attention: feature_dim ${d.F} is not supported`,
      "use a multiple of 4 between 4 and 16 (Based uses 16)",
    );
  }
  if (d.B * d.H > MAX_GRID) {
    throw new BasedError(`linear attention: B·H = ${d.B * d.H} over ${MAX_GRID}`);
  }
  return geo(d.F);
}

function dims(q: Tensor, k: Tensor, v: Tensor, featureDim?: number): Dims {
  const bad = (why: string) =>
    new Error(
      `linearAttention: ${why} (q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${
        shapeStr(v.shape)
      })`,
    );
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) throw bad("q, k, v must be [B, L, H, ·]");
  const [B, L, H, F] = q.shape;
  if (k.shape.some((s, i) => s !== q.shape[i])) throw bad("q and k differ in shape");
  if (v.shape[0] !== B || v.shape[1] !== L || v.shape[2] !== H) throw bad("v's [B, L, H] differ");
  if (featureDim !== undefined && featureDim !== F) throw bad(`feature_dim is ${featureDim}`);
  for (const t of [q, k, v]) if (t.dtype !== "f32") throw bad(`${t} is not f32`);
  return { B, L, H, F, D: v.shape[3] };
}

interface OutArgs {
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

function runOut(d: Dims, g: Geo, a: OutArgs): void {
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

interface GradArgs {
  x: Tensor;
  y: Tensor;
  a: Tensor;
  aw: Tensor | null;
  b: Tensor;
  bw: Tensor | null;
  st: Tensor | null;
  dir: 0 | 1;
  diag: boolean;
}

function runGrad(d: Dims, g: Geo, a: GradArgs): Tensor {
  const e = a.x.engine;
  const gx = e.empty([d.B, d.L, d.H, d.F]);
  const NC = Math.ceil(d.L / CHUNK);
  if (a.st) {
    e.run(
      gradStateKernel(g),
      { x: a.x, a: a.a, aw: a.aw ?? dummy(e), st: a.st, gx },
      { L: d.L, H: d.H, D: d.D, NC, SROW: g.FEP * (d.D + 1), awOne: a.aw ? 0 : 1 },
      [Math.ceil(d.L / GR), d.B * d.H],
    );
  }
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
      accum: a.st ? 1 : 0,
    },
    [NC, d.B * d.H],
  );
  return gx;
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

function forward(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  eps: number,
): [Tensor, Tensor] {
  const e = q.engine;
  const y = e.empty([d.B, d.L, d.H, d.D]);
  const den = e.empty([d.B, d.L, d.H]);
  if (view === "quadratic") {
    runOut(d, g, { x: q, y: k, u: v, st: null, out: y, den, dir: 0, diag: false, eps });
  } else if (view === "chunked") {
    const st = chunkStates(d, g, k, v, null, 0);
    runOut(d, g, { x: q, y: k, u: v, st, out: y, den, dir: 0, diag: true, eps });
    st.dispose();
  } else {
    const num = e.empty([d.B, d.L, d.H, d.D]);
    scanCol(d, g, q, k, v, num, den, 0);
    const n = d.B * d.L * d.H * d.D;
    e.run(NORMALIZE, { num, den, y }, { n, D: d.D, eps }, grid1d(n));
    num.dispose();
  }
  return [y, den];
}

function backwardViews(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  [q, k, v, y, den]: Tensor[],
  gy: Tensor,
  eps: number,
  want: [boolean, boolean, boolean],
): (Tensor | null)[] {
  const e = q.engine;
  const rows = d.B * d.L * d.H;
  const go = e.empty([d.B, d.L, d.H, d.D]);
  const gz = e.empty([d.B, d.L, d.H]);
  e.run(PREP, { gy, y, den, go, gz }, { rows, D: d.D, eps }, grid1d(rows));
  let gq: Tensor | null = null, gk: Tensor | null = null, gv: Tensor | null = null;
  if (view === "cumsum") {
    if (want[0]) gq = scanFeat(d, g, { x: q, y: k, u: v, uw: null, a: go, aw: gz, rev: 0 });
    if (want[1]) gk = scanFeat(d, g, { x: k, y: q, u: go, uw: gz, a: v, aw: null, rev: 1 });
    if (want[2]) {
      gv = e.empty([d.B, d.L, d.H, d.D]);
      scanCol(d, g, k, q, go, gv, null, 1);
    }
  } else {
    const diag = view === "chunked";
    if (want[0]) {
      const st = diag ? chunkStates(d, g, k, v, null, 0) : null;
      gq = runGrad(d, g, { x: q, y: k, a: go, aw: gz, b: v, bw: null, st, dir: 0, diag });
      st?.dispose();
    }
    if (want[1] || want[2]) {
      const st = diag ? chunkStates(d, g, q, go, gz, 1) : null;
      if (want[1]) {
        gk = runGrad(d, g, { x: k, y: q, a: v, aw: null, b: go, bw: gz, st, dir: 1, diag });
      }
      if (want[2]) {
        gv = e.empty([d.B, d.L, d.H, d.D]);
        runOut(d, g, { x: k, y: q, u: go, st, out: gv, den: null, dir: 1, diag, eps });
      }
      st?.dispose();
    }
  }
  go.dispose();
  gz.dispose();
  return [gq, gk, gv];
}

/**
 * Based linear attention, y_i = Σ_{j≤i} A_ij v_j / (Σ_{j≤i} A_ij + ε) per (batch,
 * head), q, k: [B, L, H, F], v: [B, L, H, D] -> y: [B, L, H, D]. Differentiable.
 */
export function linearAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: LinearAttentionOptions,
): Tensor {
  const d = dims(q, k, v, opts.featureDim);
  const g = checkGeometry(d);
  const eps = opts.eps ?? 1e-12;
  const view = resolveView(opts.view);
  if (opts.normalize === false) return numerator(view, d, g, q, k, v);
  const [y, den] = forward(view, d, g, q, k, v, eps);
  record("linear_attention", [q, k, v], [y], [q, k, v, y, den], ([gy], saved) => {
    if (!gy) return [null, null, null];
    return backwardViews(view, d, g, saved, gy, eps, [
      q.requiresGrad,
      k.requiresGrad,
      v.requiresGrad,
    ]);
  });
  den.dispose();
  return y;
}

/**
 * The un-normalised numerator through the same kernels: the output kernels
 * without their normalisation, and the normalised backward with r = 1 and
 * gz = 0 (y and den passed as zeros, ε = 1), i.e. go = gy.
 */
function numerator(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
): Tensor {
  const e = q.engine;
  const num = e.empty([d.B, d.L, d.H, d.D]);
  if (view === "cumsum") scanCol(d, g, q, k, v, num, null, 0);
  else {
    const st = view === "chunked" ? chunkStates(d, g, k, v, null, 0) : null;
    runOut(d, g, {
      x: q,
      y: k,
      u: v,
      st,
      out: num,
      den: null,
      dir: 0,
      diag: view === "chunked",
      eps: 0,
    });
    st?.dispose();
  }
  record("linear_attention_numerator", [q, k, v], [num], [q, k, v], ([gy], [qs, ks, vs]) => {
    if (!gy) return [null, null, null];
    const zy = e.empty(gy.shape);
    const zden = e.empty([d.B, d.L, d.H]);
    fill(zy, 0);
    fill(zden, 0);
    const out = backwardViews(view, d, g, [qs, ks, vs, zy, zden], gy, 1, [
      q.requiresGrad,
      k.requiresGrad,
      v.requiresGrad,
    ]);
    zy.dispose();
    zden.dispose();
    return out;
  });
  return num;
}

/**
 * The forward alone, not recorded, also returning the normaliser
 * den_i = Σ_{j≤i} A_ij ([B, L, H], without ε): for parity checks and tools.
 */
export function linearAttentionForward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: LinearAttentionOptions,
): { y: Tensor; den: Tensor } {
  const d = dims(q, k, v, opts.featureDim);
  const g = checkGeometry(d);
  const [y, den] = forward(resolveView(opts.view), d, g, q, k, v, opts.eps ?? 1e-12);
  return { y, den };
}

/** φ(x) = [1, x/F^¼, vec(x xᵀ)/(√2·√F)] over the last axis: [..., F] -> [..., 1+F+F²]. */
export function taylorFeatureMap(x: Tensor): Tensor {
  const F = x.shape[x.rank - 1];
  const g = checkGeometry({ B: 1, L: 1, H: 1, F, D: 1 });
  const e = x.engine;
  const rows = x.size / F;
  const out = e.empty([...x.shape.slice(0, -1), g.FEU]);
  e.run(phiKernel(g), { x, out }, { n: out.size }, grid1d(out.size));
  record("taylor_feature_map", [x], [out], [x], ([gphi], [xs]) => {
    if (!gphi) return [null];
    const gx = e.empty(xs.shape);
    e.run(phiBwdKernel(g), { x: xs, gphi, gx }, { n: rows * F }, grid1d(rows * F));
    return [gx];
  });
  return out;
}

// ------------------------------------------------------------------ recurrent API

/** Generation state of one linear-attention layer (spec §3.5 cache layout). */
export interface LinearAttentionState {
  /** Σ v_t φ(k_t)ᵀ: [B, H, D, 1+F+F²] */
  kv: Tensor;
  /** Σ φ(k_t): [B, H, 1+F+F²] */
  k: Tensor;
}

/** A zeroed recurrent state. */
export function linearAttentionState(
  B: number,
  H: number,
  F: number,
  D: number,
): LinearAttentionState {
  const g = checkGeometry({ B, L: 1, H, F, D });
  const e = engine();
  const kv = e.empty([B, H, D, g.FEU], "f32", "linear-attention kv state");
  const ks = e.empty([B, H, g.FEU], "f32", "linear-attention k state");
  fill(kv, 0);
  fill(ks, 0);
  return { kv, k: ks };
}

function stateDims(state: LinearAttentionState, k: Tensor, v: Tensor): Dims {
  const [B, L, H, F] = k.shape;
  const D = v.shape[3];
  const W = 1 + F + F * F;
  const okState = state.kv.shape.join() === [B, H, D, W].join() &&
    state.k.shape.join() === [B, H, W].join();
  if (k.rank !== 4 || v.rank !== 4 || v.shape[1] !== L || v.shape[2] !== H || !okState) {
    throw new Error(
      `linear attention state: k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)} do not match ` +
        `the state ${shapeStr(state.kv.shape)}`,
    );
  }
  return { B, L, H, F, D };
}

/** Adds Σ_t v_t φ(k_t)ᵀ and Σ_t φ(k_t) of a prompt (k: [B, L, H, F], v: [B, L, H, D]). */
export function linearAttentionPrefill(
  state: LinearAttentionState,
  k: Tensor,
  v: Tensor,
): void {
  const d = stateDims(state, k, v);
  const g = checkGeometry(d);
  const total = d.B * d.H * (d.D + 1) * g.FEU;
  k.engine.run(
    prefillKernel(g),
    { k, v, kv: state.kv, ks: state.k },
    { total, L: d.L, H: d.H, D: d.D },
    grid1d(total),
  );
}

/**
 * One generation step: adds token t to the state and returns
 * y_t = (kv φ(q_t)) / (φ(q_t)·ks + ε); q, k: [B, 1, H, F], v: [B, 1, H, D] -> [B, 1, H, D].
 */
export function linearAttentionStep(
  state: LinearAttentionState,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  eps = 1e-12,
): Tensor {
  const d = stateDims(state, k, v);
  if (d.L !== 1 || q.shape.join() !== k.shape.join()) {
    throw new Error(`linearAttentionStep: one token expected (q ${shapeStr(q.shape)})`);
  }
  const g = checkGeometry(d);
  const e = q.engine;
  const y = e.empty([d.B, 1, d.H, d.D]);
  e.run(
    stepKernel(g, d.D),
    { q, k, v, kv: state.kv, ks: state.k, y },
    { H: d.H, eps },
    [d.B * d.H],
  );
  return y;
}
