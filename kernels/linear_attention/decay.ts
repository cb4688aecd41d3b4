/**
 * Linear attention with the paper's fixed decay (decay_reference.ts has the
 * definition and the float64 forms): per head r_h = 1 − 2^(c0 − h),
 *
 *   y_i = σ_i · Σ_{j≤i} r^(i−j) A_ij v_j / (Σ_{j≤i} A_ij + ε),
 *
 * the denominator undecayed, σ_i the optional row normalisation. The decay
 * weights r^n and σ_i come from float64 tables ([H, L], uploaded once per
 * (H, L, c0, denom) and kept): WGSL's pow/log2 lose the relative accuracy of
 * r^n for r near 1, the tables are exact to one f32 rounding.
 *
 * The quadratic form, direct (correct first; not yet tiled like quadratic.ts):
 * forward one thread per (b, i, h, 16 value columns) over keys j ≤ i; backward
 * dv one thread per (b, j, h, 16 columns) over rows i ≥ j, dq and dk one thread
 * per (b, row or key, h) with F accumulators. Same backward algebra as the
 * undecayed views (PREP: go = gy/(z+ε), gz = −(gy·y)/(z+ε)), with
 * dA_ij = r^(i−j) σ_i (go_i·v_j) + gz_i, dv_j = Σ_i r^(i−j) σ_i A_ij go_i.
 */
import { defineKernel, type Engine, type Kernel } from "../../tensor/engine.ts";
import { keep, type Tensor } from "../../tensor/tensor.ts";
import { record } from "../../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, type Dims, f32, type Geo, PREP } from "./geometry.ts";
import { type DecayOptions, decayRowScale, decayWeight } from "./decay_reference.ts";

export type { DecayOptions };

export interface DecayTables {
  /** r_h^n: [H, n] */
  pw: Tensor;
  /** σ_i: [H, n] */
  sig: Tensor;
  /** table length (positions 0..n−1) */
  n: number;
}

const tables = new WeakMap<Engine, Map<string, DecayTables>>();

/** The decay tables for H heads and positions < n (cached per engine, kept alive). */
export function decayTables(e: Engine, H: number, n: number, o: DecayOptions): DecayTables {
  let m = tables.get(e);
  if (!m) tables.set(e, m = new Map());
  const key = `${H}_${n}_${o.c0}_${o.denom}`;
  let t = m.get(key);
  if (!t || t.pw.disposed || t.sig.disposed) {
    const pw = new Float32Array(H * n), sig = new Float32Array(H * n);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < n; i++) {
        pw[h * n + i] = decayWeight(o.c0, h, i);
        sig[h * n + i] = decayRowScale(o, h, i);
      }
    }
    t = { pw: keep(e.tensor(pw, [H, n])), sig: keep(e.tensor(sig, [H, n])), n };
    m.set(key, t);
  }
  return t;
}

const SHAPE = { L: "u32", H: "u32", D: "u32", n: "u32", TS: "u32", CH: "u32" } as const;

/** s = q_i·k_j/√F, with the row's q (scaled by F^-¼) in `qi` and k read scaled. */
const dotS = /* wgsl */ `
fn score(qi: array<f32, F>, kb: u32) -> f32 {
  var s = 0.0;
  for (var f = 0u; f < F; f++) { s += qi[f] * (SC * k[kb + f]); }
  return s;
}`;

/** Value columns per thread of the forward and dv kernels (the scores are recomputed per group). */
export const CPT = 16;

const head = (g: Geo) => /* wgsl */ `
const F: u32 = ${g.F}u;
const CPT: u32 = ${CPT}u;
const SC: f32 = ${f32(Math.pow(g.F, -0.25))};
${LINEAR_ID}`;

function fwdKernel(g: Geo): Kernel {
  return cached(`decay_fwd_${g.F}`, () =>
    defineKernel({
      name: `la_decay_fwd_f${g.F}`,
      params: { ...SHAPE, NC: "u32", eps: "f32" },
      bindings: { q: "read", k: "read", v: "read", pw: "read", sig: "read", y: "rw", den: "rw" },
      code: /* wgsl */ `${head(g)}${dotS}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  let c = t % P.NC;
  let row = t / P.NC; // (b·L + i)·H + h
  if (row >= P.n) { return; }
  let h = row % P.H;
  let i = (row / P.H) % P.L;
  let b = row / (P.H * P.L);
  var qi: array<f32, F>;
  for (var f = 0u; f < F; f++) { qi[f] = SC * q[row * F + f]; }
  var acc: array<f32, CPT>; // zero-initialised
  var z = 0.0;
  for (var j = 0u; j <= i; j++) {
    let rj = (b * P.L + j) * P.H + h;
    let s = score(qi, rj * F);
    let a = 1.0 + s + 0.5 * s * s;
    z += a;
    let m = pw[h * P.TS + i - j] * a;
    for (var cc = 0u; cc < CPT; cc++) {
      let d = c * CPT + cc;
      if (d < P.D) { acc[cc] += m * v[rj * P.D + d]; }
    }
  }
  let r = sig[h * P.TS + i] / (z + P.eps);
  for (var cc = 0u; cc < CPT; cc++) {
    let d = c * CPT + cc;
    if (d < P.D) { y[row * P.D + d] = acc[cc] * r; }
  }
  if (c == 0u) { den[row] = z; }
}`,
    }));
}

function dvKernel(g: Geo): Kernel {
  return cached(`decay_dv_${g.F}`, () =>
    defineKernel({
      name: `la_decay_dv_f${g.F}`,
      params: { ...SHAPE, NC: "u32" },
      bindings: { q: "read", k: "read", go: "read", pw: "read", sig: "read", dv: "rw" },
      code: /* wgsl */ `${head(g)}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  let c = t % P.NC;
  let col = t / P.NC; // (b·L + j)·H + h
  if (col >= P.n) { return; }
  let h = col % P.H;
  let j = (col / P.H) % P.L;
  let b = col / (P.H * P.L);
  var kj: array<f32, F>;
  for (var f = 0u; f < F; f++) { kj[f] = SC * k[col * F + f]; }
  var acc: array<f32, CPT>; // zero-initialised
  let hi = min(P.L, (j / P.CH) * P.CH + P.CH);
  for (var i = j; i < hi; i++) {
    let ri = (b * P.L + i) * P.H + h;
    var s = 0.0;
    for (var f = 0u; f < F; f++) { s += (SC * q[ri * F + f]) * kj[f]; }
    let m = pw[h * P.TS + i - j] * sig[h * P.TS + i] * (1.0 + s + 0.5 * s * s);
    for (var cc = 0u; cc < CPT; cc++) {
      let d = c * CPT + cc;
      if (d < P.D) { acc[cc] += m * go[ri * P.D + d]; }
    }
  }
  for (var cc = 0u; cc < CPT; cc++) {
    let d = c * CPT + cc;
    if (d < P.D) { dv[col * P.D + d] = acc[cc]; }
  }
}`,
    }));
}

/** dq (dir 0: thread = row i, keys j ≤ i) or dk (dir 1: thread = key j, rows i ≥ j). */
function dqkKernel(g: Geo, dir: 0 | 1): Kernel {
  return cached(`decay_dqk_${g.F}_${dir}`, () =>
    defineKernel({
      name: `la_decay_${dir ? "dk" : "dq"}_f${g.F}`,
      params: SHAPE,
      bindings: {
        q: "read",
        k: "read",
        v: "read",
        go: "read",
        gz: "read",
        pw: "read",
        sig: "read",
        out: "rw",
      },
      code: /* wgsl */ `${head(g)}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let me = linear_id(wid, nwg, lid, 256u); // (b·L + t)·H + h
  if (me >= P.n) { return; }
  let h = me % P.H;
  let t = (me / P.H) % P.L;
  let b = me / (P.H * P.L);
  var x: array<f32, F>;
  var acc: array<f32, F>;
  for (var f = 0u; f < F; f++) {
    x[f] = SC * ${dir ? "k" : "q"}[me * F + f];
    acc[f] = 0.0;
  }
  let lo = (t / P.CH) * P.CH;
  let hi = min(P.L, lo + P.CH);
  ${dir ? "for (var o = t; o < hi; o++) {" : "for (var o = lo; o <= t; o++) {"}
    let other = (b * P.L + o) * P.H + h;
    let ri = ${dir ? "other" : "me"};
    let rj = ${dir ? "me" : "other"};
    let i = ${dir ? "o" : "t"};
    let j = ${dir ? "t" : "o"};
    var s = 0.0;
    for (var f = 0u; f < F; f++) { s += x[f] * (SC * ${dir ? "q" : "k"}[other * F + f]); }
    var gov = 0.0;
    for (var d = 0u; d < P.D; d++) { gov += go[ri * P.D + d] * v[rj * P.D + d]; }
    let da = pw[h * P.TS + i - j] * sig[h * P.TS + i] * gov + gz[ri];
    let ds = da * (1.0 + s) * SC * SC; // ∂s/∂x = (other)/√F
    for (var f = 0u; f < F; f++) { acc[f] += ds * ${dir ? "q" : "k"}[other * F + f]; }
  }
  for (var f = 0u; f < F; f++) { out[me * F + f] = acc[f]; }
}`,
    }));
}

/**
 * Decayed linear attention, q, k: [B, L, H, F], v: [B, L, H, D] -> y; den
 * (Σ A, undecayed) for the backward. `t`: tables of length ≥ L.
 */
export function decayForward(
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: DecayOptions,
  eps: number,
): [Tensor, Tensor] {
  const e = q.engine;
  const t = decayTables(e, d.H, d.L + 1, o);
  const y = e.empty([d.B, d.L, d.H, d.D]);
  const den = e.empty([d.B, d.L, d.H]);
  const n = d.B * d.L * d.H, NC = Math.ceil(d.D / CPT);
  e.run(
    fwdKernel(g),
    { q, k, v, pw: t.pw, sig: t.sig, y, den },
    { L: d.L, H: d.H, D: d.D, n, TS: d.L + 1, CH: d.L, NC, eps },
    grid1d(n * NC),
  );
  return [y, den];
}

/** Adds the terms a view computes outside the direct chunk-local sums (chunked: the states). */
export type DecayInter = (
  go: Tensor,
  gz: Tensor,
  grads: [Tensor | null, Tensor | null, Tensor | null],
  tables: DecayTables,
) => void;

/**
 * Gradients of decayForward (null where not wanted): the direct sums over
 * (i, j) pairs within chunks of `CH` tokens (CH = L: every pair, the quadratic
 * form), plus `inter` for the pairs across chunks.
 */
export function decayBackward(
  d: Dims,
  g: Geo,
  [q, k, v, y, den]: Tensor[],
  gy: Tensor,
  o: DecayOptions,
  eps: number,
  want: [boolean, boolean, boolean],
  CH = d.L,
  inter?: DecayInter,
): (Tensor | null)[] {
  const e = q.engine;
  const t = decayTables(e, d.H, d.L + 1, o);
  const n = d.B * d.L * d.H, NC = Math.ceil(d.D / CPT);
  const go = e.empty([d.B, d.L, d.H, d.D]);
  const gz = e.empty([d.B, d.L, d.H]);
  e.run(PREP, { gy, y, den, go, gz }, { rows: n, D: d.D, eps }, grid1d(n));
  const shape = { L: d.L, H: d.H, D: d.D, n, TS: d.L + 1, CH };
  const grad = (dir: 0 | 1) => {
    const out = e.empty([d.B, d.L, d.H, d.F]);
    e.run(dqkKernel(g, dir), { q, k, v, go, gz, pw: t.pw, sig: t.sig, out }, shape, grid1d(n));
    return out;
  };
  const dq = want[0] ? grad(0) : null;
  const dk = want[1] ? grad(1) : null;
  let dv: Tensor | null = null;
  if (want[2]) {
    dv = e.empty([d.B, d.L, d.H, d.D]);
    e.run(
      dvKernel(g),
      { q, k, go, pw: t.pw, sig: t.sig, dv },
      { ...shape, NC },
      grid1d(n * NC),
    );
  }
  inter?.(go, gz, [dq, dk, dv], t);
  go.dispose();
  gz.dispose();
  return [dq, dk, dv];
}

/** The forward of one decayed view: [y, den]. */
export type DecayForward = typeof decayForward;

/** A view's backward: gradients as decayBackward's. */
export type DecayBackward = typeof decayBackward;

/** Differentiable decayed linear attention through a view's forward and backward. */
export function decayedLinearAttention(
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: DecayOptions,
  eps: number,
  fwd: DecayForward = decayForward,
  bwd: DecayBackward = decayBackward,
): Tensor {
  const [y, den] = fwd(d, g, q, k, v, o, eps);
  record("linear_attention_decay", [q, k, v], [y], [q, k, v, y, den], ([gy], saved) => {
    if (!gy) return [null, null, null];
    return bwd(d, g, saved, gy, o, eps, [
      q.requiresGrad,
      k.requiresGrad,
      v.requiresGrad,
    ]);
  }, { packable: [0, 1, 2] }); // q, k, v (y and the normaliser stay f32)
  den.dispose();
  return y;
}
