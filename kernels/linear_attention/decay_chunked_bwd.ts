/**
 * The chunked view's backward of the decayed linear attention. With
 * g_i = σ_i go_i (go_i = gy_i/(z_i+ε), gz_i = −(gy_i·y_i)/(z_i+ε): PREP), the
 * pairs (i, j) inside one chunk are summed directly (decay.ts's kernels with
 * chunk-local ranges); the pairs across chunks go through states:
 *
 * - rows i of chunk n, keys j < c_n: ∂/∂φ(q_i) = r^(i−c+1) S_nᵀ g_i + gz_i Z_n
 *   (S_n, Z_n: the forward's prefix states, recomputed);
 * - keys j of chunk n, rows i ≥ e_n (the chunk's end): with the suffix states
 *   T_n = Σ_{i≥e_n} r^(i−e_n) φ(q_i) g_iᵀ and U_n = Σ_{i≥e_n} gz_i φ(q_i),
 *   dv_j += r^(e_n−j) T_nᵀ φ(k_j) and ∂/∂φ(k_j) = r^(e_n−j) T_n v_j + U_n;
 * - φ's backward turns ∂/∂φ(x) into ∂/∂x (added to the direct dq, dk).
 *
 * T is a reverse exclusive scan of the chunks' local sums
 * ΔT_m = Σ_{i∈m} r^(i−c_m) φ(q_i) [g_i | gz_i]ᵀ: T_n = ΔT_{n+1} + r^len T_{n+1}.
 * States: [B·H, NC, D+1, 1+F+F²] (U in column D); ∂/∂φ: [B·L·H, 1+F+F²].
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, CHUNK, common, type Dims, type Geo } from "./geometry.ts";
import { decayBackward, type DecayInter, type DecayOptions, type DecayTables } from "./decay.ts";
import { prefixStates } from "./decay_chunked.ts";

const DIMS = { L: "u32", H: "u32", D: "u32", NC: "u32", TS: "u32" } as const;

/** Row (b·L + i)·H + h -> its parts, and the row's chunk. */
const ROW = /* wgsl */ `
struct Row { b: u32, i: u32, h: u32, n: u32, c: u32, e: u32 }
fn row_of(r: u32) -> Row {
  let h = r % P.H;
  let i = (r / P.H) % P.L;
  let b = r / (P.H * P.L);
  let n = i / ${CHUNK}u;
  return Row(b, i, h, n, n * ${CHUNK}u, min(P.L, n * ${CHUNK}u + ${CHUNK}u));
}
fn feat_of(x: u32, e: u32) -> f32 {
  let ab = featu_ab(e);
  let fa = ab & 255u;
  let fb = ab >> 8u;
  var xa = 1.0;
  var xb = 1.0;
  if (fa > 0u) { xa = SC * X[x * F + fa - 1u]; }
  if (fb > 0u) { xb = SC * X[x * F + fb - 1u]; }
  return featu_w(e) * xa * xb;
}`;

/** ΔT_n: thread per (b·h, chunk, column, feature). */
function suffixLocalKernel(g: Geo): Kernel {
  return cached(`decay_sfx_local_${g.F}`, () =>
    defineKernel({
      name: `la_decay_sfx_local_f${g.F}`,
      params: { total: "u32", ...DIMS },
      bindings: { X: "read", go: "read", gz: "read", pw: "read", sig: "read", st: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}${ROW}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  if (t >= P.total) { return; }
  let e = t % FEU;
  var rest = t / FEU;
  let d = rest % (P.D + 1u);
  rest = rest / (P.D + 1u);
  let n = rest % P.NC;
  let bh = rest / P.NC;
  let b = bh / P.H;
  let h = bh % P.H;
  let c = n * ${CHUNK}u;
  let end = min(P.L, c + ${CHUNK}u);
  var sum = 0.0;
  for (var i = c; i < end; i++) {
    let r = (b * P.L + i) * P.H + h;
    var val = gz[r];
    if (d < P.D) { val = pw[h * P.TS + i - c] * sig[h * P.TS + i] * go[r * P.D + d]; }
    sum += feat_of(r, e) * val;
  }
  st[t] = sum;
}`,
    }));
}

/** T_n = ΔT_{n+1} + r^len_{n+1} T_{n+1} (U: undecayed), in place, thread per (b·h, column, feature). */
function suffixScanKernel(g: Geo): Kernel {
  return cached(`decay_sfx_scan_${g.F}`, () =>
    defineKernel({
      name: `la_decay_sfx_scan_f${g.F}`,
      params: { total: "u32", ...DIMS },
      bindings: { pw: "read", st: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  if (t >= P.total) { return; }
  let e = t % FEU;
  let d = (t / FEU) % (P.D + 1u);
  let bh = t / (FEU * (P.D + 1u));
  let h = bh % P.H;
  var carry = 0.0;
  for (var m = P.NC; m > 0u; m--) {
    let n = m - 1u;
    let o = ((bh * P.NC + n) * (P.D + 1u) + d) * FEU + e;
    let local = st[o];
    st[o] = carry;
    let len = min(P.L - n * ${CHUNK}u, ${CHUNK}u);
    var decay = 1.0;
    if (d < P.D) { decay = pw[h * P.TS + len]; }
    carry = local + decay * carry;
  }
}`,
    }));
}

/**
 * ∂/∂φ of the rows (dir 0: q with the prefix states) or the keys (dir 1: k with the
 * suffix states), thread per (row, feature).
 */
function gphiKernel(g: Geo, dir: 0 | 1): Kernel {
  return cached(`decay_gphi_${g.F}_${dir}`, () =>
    defineKernel({
      name: `la_decay_gphi_${dir ? "k" : "q"}_f${g.F}`,
      params: { n: "u32", ...DIMS },
      bindings: dir
        ? { X: "read", v: "read", pw: "read", st: "read", gphi: "rw" }
        : { X: "read", go: "read", gz: "read", pw: "read", sig: "read", st: "read", gphi: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}${ROW}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  if (t >= P.n * FEU) { return; }
  let e = t % FEU;
  let r = t / FEU;
  let w = row_of(r);
  let sb = ((w.b * P.H + w.h) * P.NC + w.n) * (P.D + 1u) * FEU;
  var acc = 0.0;
  ${
        dir
          ? `for (var d = 0u; d < P.D; d++) { acc += st[sb + d * FEU + e] * v[r * P.D + d]; }
  gphi[t] = pw[w.h * P.TS + w.e - w.i] * acc + st[sb + P.D * FEU + e];`
          : `for (var d = 0u; d < P.D; d++) { acc += st[sb + d * FEU + e] * go[r * P.D + d]; }
  let dec = pw[w.h * P.TS + w.i - w.c + 1u] * sig[w.h * P.TS + w.i];
  gphi[t] = dec * acc + gz[r] * st[sb + P.D * FEU + e];`
      }
}`,
    }));
}

/** out[r, f] += ∂/∂x_f of Σ_e gphi[r, e] φ_e(x_r) (φ's backward), thread per (row, f). */
function phiBackAddKernel(g: Geo): Kernel {
  return cached(`decay_phi_back_add_${g.F}`, () =>
    defineKernel({
      name: `la_decay_phi_back_add_f${g.F}`,
      params: { n: "u32" },
      bindings: { X: "read", gphi: "read", out: "rw" },
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
    s += (gphi[gb + 1u + F + a * F + bx] + gphi[gb + 1u + F + bx * F + a]) * SC * X[row * F + bx];
  }
  out[i] += SC * (gphi[gb + 1u + a] + RS2 * s);
}`,
    }));
}

/** dv_j += r^(e_n − j) T_nᵀ φ(k_j), thread per (row, value column). */
function dvInterKernel(g: Geo): Kernel {
  return cached(`decay_dv_inter_${g.F}`, () =>
    defineKernel({
      name: `la_decay_dv_inter_f${g.F}`,
      params: { n: "u32", ...DIMS },
      bindings: { X: "read", pw: "read", st: "read", dv: "rw" },
      code: /* wgsl */ `${common(g)}${LINEAR_ID}${ROW}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let t = linear_id(wid, nwg, lid, 256u);
  if (t >= P.n * P.D) { return; }
  let d = t % P.D;
  let r = t / P.D;
  let w = row_of(r);
  let sb = ((w.b * P.H + w.h) * P.NC + w.n) * (P.D + 1u) * FEU + d * FEU;
  var acc = 0.0;
  for (var e = 0u; e < FEU; e++) { acc += feat_of(r, e) * st[sb + e]; }
  dv[t] += pw[w.h * P.TS + w.e - w.i] * acc;
}`,
    }));
}

/** Gradients of decayChunkedForward. */
export function decayChunkedBackward(
  d: Dims,
  g: Geo,
  saved: Tensor[],
  gy: Tensor,
  o: DecayOptions,
  eps: number,
  want: [boolean, boolean, boolean],
): (Tensor | null)[] {
  const [q, k, v] = saved;
  const e = q.engine;
  const NC = Math.ceil(d.L / CHUNK);
  const dims = { L: d.L, H: d.H, D: d.D, NC, TS: d.L + 1 };
  const n = d.B * d.L * d.H;
  const inter: DecayInter = (go, gz, [dq, dk, dv], t: DecayTables) => {
    const gphi = e.empty([n, g.FEU], "f32", "decay dphi");
    if (dq) {
      const S = prefixStates(d, g, k, v, t);
      e.run(
        gphiKernel(g, 0),
        { X: q, go, gz, pw: t.pw, sig: t.sig, st: S, gphi },
        { n, ...dims },
        grid1d(n * g.FEU),
      );
      e.run(phiBackAddKernel(g), { X: q, gphi, out: dq }, { n: n * d.F }, grid1d(n * d.F));
      S.dispose();
    }
    if (dk || dv) {
      const T = e.empty([d.B * d.H, NC, d.D + 1, g.FEU], "f32", "decay suffix states");
      e.run(
        suffixLocalKernel(g),
        { X: q, go, gz, pw: t.pw, sig: t.sig, st: T },
        { total: T.size, ...dims },
        grid1d(T.size),
      );
      const cols = T.size / NC;
      e.run(suffixScanKernel(g), { pw: t.pw, st: T }, { total: cols, ...dims }, grid1d(cols));
      if (dk) {
        e.run(
          gphiKernel(g, 1),
          { X: k, v, pw: t.pw, st: T, gphi },
          { n, ...dims },
          grid1d(n * g.FEU),
        );
        e.run(phiBackAddKernel(g), { X: k, gphi, out: dk }, { n: n * d.F }, grid1d(n * d.F));
      }
      if (dv) {
        e.run(dvInterKernel(g), { X: k, pw: t.pw, st: T, dv }, { n, ...dims }, grid1d(n * d.D));
      }
      T.dispose();
    }
    gphi.dispose();
  };
  return decayBackward(d, g, saved, gy, o, eps, want, CHUNK, inter);
}
