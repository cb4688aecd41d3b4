/**
 * The chunked view of the decayed linear attention (decay_reference.ts,
 * `decayChunked`): chunks of C = 64 tokens; per chunk n starting at c,
 * S_n = Σ_{j<c} r^(c−1−j) φ(k_j) v_jᵀ and Z_n = Σ_{j<c} φ(k_j) (undecayed);
 * row i of chunk n takes r^(i−c+1) φ(q_i)ᵀ S_n and φ(q_i)·Z_n plus the
 * decayed diagonal block over keys c..i.
 *
 * Three kernels over the unpacked 1+F+F² features: (1) each chunk's local
 * state ΔS_n = Σ_{j∈n} r^(end−1−j) φ(k_j) [v_j | 1]ᵀ (the 1-column undecayed),
 * one thread per (b·h, chunk, column, feature); (2) the exclusive scan
 * S_{n+1} = r^len_n S_n + ΔS_n in place, one thread per (b·h, column,
 * feature); (3) the output, one thread per (row, b·h, 16 columns). Memory:
 * B·H·⌈L/C⌉·(D+1)·(1+F+F²) floats for the states.
 *
 * The backward (decay_chunked_bwd.ts): the direct sums inside each chunk plus
 * prefix and suffix states across chunks.
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, CHUNK, common, type Dims, type Geo } from "./geometry.ts";
import { CPT, type DecayOptions, type DecayTables, decayTables } from "./decay.ts";

const FEAT = /* wgsl */ `
const CPT: u32 = ${CPT}u;
// feature e of φ(x) for the row at x[xb .. xb + F)
fn feat(e: u32, xb: u32, which: u32) -> f32 {
  let ab = featu_ab(e);
  let fa = ab & 255u;
  let fb = ab >> 8u;
  var xa = 1.0;
  var xbv = 1.0;
  if (which == 0u) {
    if (fa > 0u) { xa = SC * q[xb + fa - 1u]; }
    if (fb > 0u) { xbv = SC * q[xb + fb - 1u]; }
  } else {
    if (fa > 0u) { xa = SC * k[xb + fa - 1u]; }
    if (fb > 0u) { xbv = SC * k[xb + fb - 1u]; }
  }
  return featu_w(e) * xa * xbv;
}`;

function localKernel(g: Geo): Kernel {
  return cached(`decay_chunk_local_${g.F}`, () =>
    defineKernel({
      name: `la_decay_chunk_local_f${g.F}`,
      params: { total: "u32", L: "u32", H: "u32", D: "u32", NC: "u32", TS: "u32" },
      bindings: { k: "read", v: "read", pw: "read", st: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.total) { return; }
  let e = i % FEU;
  var rest = i / FEU;
  let d = rest % (P.D + 1u);
  rest = rest / (P.D + 1u);
  let n = rest % P.NC;
  let bh = rest / P.NC;
  let b = bh / P.H;
  let h = bh % P.H;
  let c = n * ${CHUNK}u;
  let end = min(P.L, c + ${CHUNK}u);
  let ab = featu_ab(e);
  let fa = ab & 255u;
  let fb = ab >> 8u;
  let w = featu_w(e);
  var sum = 0.0;
  for (var j = c; j < end; j++) {
    let kb = ((b * P.L + j) * P.H + h) * F;
    var xa = 1.0;
    var xb = 1.0;
    if (fa > 0u) { xa = SC * k[kb + fa - 1u]; }
    if (fb > 0u) { xb = SC * k[kb + fb - 1u]; }
    var val = 1.0;
    if (d < P.D) { val = pw[h * P.TS + end - 1u - j] * v[((b * P.L + j) * P.H + h) * P.D + d]; }
    sum += w * xa * xb * val;
  }
  st[i] = sum;
}`,
    }));
}

function scanKernel(g: Geo): Kernel {
  return cached(`decay_chunk_scan_${g.F}`, () =>
    defineKernel({
      name: `la_decay_chunk_scan_f${g.F}`,
      params: { total: "u32", L: "u32", H: "u32", D: "u32", NC: "u32", TS: "u32" },
      bindings: { pw: "read", st: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.total) { return; }
  let e = i % FEU;
  let d = (i / FEU) % (P.D + 1u);
  let bh = i / (FEU * (P.D + 1u));
  let h = bh % P.H;
  var carry = 0.0;
  for (var n = 0u; n < P.NC; n++) {
    let o = ((bh * P.NC + n) * (P.D + 1u) + d) * FEU + e;
    let local = st[o];
    st[o] = carry;
    let len = min(P.L - n * ${CHUNK}u, ${CHUNK}u);
    var decay = 1.0;
    if (d < P.D) { decay = pw[h * P.TS + len]; }
    carry = decay * carry + local;
  }
}`,
    }));
}

function outKernel(g: Geo): Kernel {
  return cached(`decay_chunk_out_${g.F}`, () =>
    defineKernel({
      name: `la_decay_chunk_out_f${g.F}`,
      params: {
        n: "u32",
        L: "u32",
        H: "u32",
        D: "u32",
        NC: "u32",
        NCOL: "u32",
        TS: "u32",
        eps: "f32",
      },
      bindings: {
        q: "read",
        k: "read",
        v: "read",
        pw: "read",
        sig: "read",
        st: "read",
        y: "rw",
        den: "rw",
      },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}${FEAT}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  let cg = t % P.NCOL;
  let row = t / P.NCOL; // (b·L + i)·H + h
  if (row >= P.n) { return; }
  let h = row % P.H;
  let i = (row / P.H) % P.L;
  let b = row / (P.H * P.L);
  let bh = b * P.H + h;
  let nc = i / ${CHUNK}u;
  let c = nc * ${CHUNK}u;
  let sb = (bh * P.NC + nc) * (P.D + 1u) * FEU;
  var acc: array<f32, CPT>; // zero-initialised
  var z = 0.0;
  for (var e = 0u; e < FEU; e++) {
    let pe = feat(e, row * F, 0u);
    z += pe * st[sb + P.D * FEU + e];
    for (var cc = 0u; cc < CPT; cc++) {
      let d = cg * CPT + cc;
      if (d < P.D) { acc[cc] += pe * st[sb + d * FEU + e]; }
    }
  }
  let inter = pw[h * P.TS + i - c + 1u];
  for (var cc = 0u; cc < CPT; cc++) { acc[cc] *= inter; }
  for (var j = c; j <= i; j++) {
    let rj = (b * P.L + j) * P.H + h;
    var s = 0.0;
    for (var f = 0u; f < F; f++) { s += (SC * q[row * F + f]) * (SC * k[rj * F + f]); }
    let a = 1.0 + s + 0.5 * s * s;
    z += a;
    let m = pw[h * P.TS + i - j] * a;
    for (var cc = 0u; cc < CPT; cc++) {
      let d = cg * CPT + cc;
      if (d < P.D) { acc[cc] += m * v[rj * P.D + d]; }
    }
  }
  let r = sig[h * P.TS + i] / (z + P.eps);
  for (var cc = 0u; cc < CPT; cc++) {
    let d = cg * CPT + cc;
    if (d < P.D) { y[row * P.D + d] = acc[cc] * r; }
  }
  if (cg == 0u) { den[row] = z; }
}`,
    }));
}

/**
 * The states at each chunk's start, [B·H, NC, D+1, 1+F+F²]: S_n (columns < D)
 * and Z_n (column D). `t`: decay tables of stride L + 1.
 */
export function prefixStates(d: Dims, g: Geo, k: Tensor, v: Tensor, t: DecayTables): Tensor {
  const e = k.engine;
  const NC = Math.ceil(d.L / CHUNK);
  const st = e.empty([d.B * d.H, NC, d.D + 1, g.FEU], "f32", "decay chunk states");
  const dims = { L: d.L, H: d.H, D: d.D, NC, TS: d.L + 1 };
  e.run(localKernel(g), { k, v, pw: t.pw, st }, { total: st.size, ...dims }, grid1d(st.size));
  const cols = st.size / NC;
  e.run(scanKernel(g), { pw: t.pw, st }, { total: cols, ...dims }, grid1d(cols));
  return st;
}

/** Forward of the chunked decayed view: [y, den] as decayForward. */
export function decayChunkedForward(
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: DecayOptions,
  eps: number,
): [Tensor, Tensor] {
  const e = q.engine;
  // r^n for n ≤ L: the carry over a whole chunk and the inter-chunk factor reach n = min(L, C)
  const TS = d.L + 1;
  const t = decayTables(e, d.H, TS, o);
  const NC = Math.ceil(d.L / CHUNK);
  const dims = { L: d.L, H: d.H, D: d.D, NC, TS };
  const st = prefixStates(d, g, k, v, t);
  const y = e.empty([d.B, d.L, d.H, d.D]);
  const den = e.empty([d.B, d.L, d.H]);
  const n = d.B * d.L * d.H, NCOL = Math.ceil(d.D / CPT);
  e.run(
    outKernel(g),
    { q, k, v, pw: t.pw, sig: t.sig, st, y, den },
    { n, NCOL, eps, ...dims },
    grid1d(n * NCOL),
  );
  st.dispose();
  return [y, den];
}
