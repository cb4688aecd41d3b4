/**
 * The recurrent view with the fixed decay (decay_reference.ts): the prompt's
 * state Σ_t r^(L−1−t) v_t φ(k_t)ᵀ (older state decayed by r^L) and the
 * undecayed Σ φ(k_t); per step kv ← r·kv + v φ(k)ᵀ, ks ← ks + φ(k),
 * y = σ_pos (kv φ(q)) / (φ(q)·ks + ε), σ_pos the closed-form row
 * normalisation (the row sum of the decay matrix is a geometric series).
 * r and σ come from the float64 tables of decay.ts (length ≥ positions + 1).
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import { shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, checkGeometry, common, type Geo } from "./geometry.ts";
import type { LinearAttentionState } from "./recurrent.ts";
import { type DecayOptions, decayTables } from "./decay.ts";

function prefillKernel(g: Geo): Kernel {
  return cached(`decay_prefill_${g.F}`, () =>
    defineKernel({
      name: `la_decay_prefill_f${g.F}`,
      params: { total: "u32", L: "u32", H: "u32", D: "u32", n: "u32" },
      bindings: { k: "read", v: "read", pw: "read", kv: "rw", ks: "rw" },
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
  let r = pw[h * P.n + 1u];
  var sum = 0.0;
  for (var t = 0u; t < P.L; t++) {
    let kb = ((b * P.L + t) * P.H + h) * F;
    var xa = 1.0;
    var xb = 1.0;
    if (fa > 0u) { xa = SC * k[kb + fa - 1u]; }
    if (fb > 0u) { xb = SC * k[kb + fb - 1u]; }
    if (d < P.D) {
      sum = r * sum + w * xa * xb * v[((b * P.L + t) * P.H + h) * P.D + d];
    } else {
      sum += w * xa * xb;
    }
  }
  if (d < P.D) {
    let o = (bh * P.D + d) * FEU + e;
    kv[o] = pw[h * P.n + P.L] * kv[o] + sum;
  } else {
    ks[bh * FEU + e] += sum;
  }
}`,
    }));
}

function stepKernel(g: Geo, D: number): Kernel {
  return cached(`decay_step_${g.F}_${D}`, () =>
    defineKernel({
      name: `la_decay_step_f${g.F}_d${D}`,
      params: { H: "u32", eps: "f32", n: "u32", pos: "u32" },
      bindings: {
        q: "read",
        k: "read",
        v: "read",
        pw: "read",
        sig: "read",
        kv: "rw",
        ks: "rw",
        y: "rw",
      },
      code: /* wgsl */ `${common(g)}
const D: u32 = ${D}u;
var<workgroup> pq: array<f32, ${g.FEU}>;
var<workgroup> pk: array<f32, ${g.FEU}>;
var<workgroup> res: array<f32, ${D + 1}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.x;
  let h = bh % P.H;
  let r = pw[h * P.n + 1u];
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
        let s = r * kv[base + e] + vv * pk[e];
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
  for (var d = lid; d < D; d += 256u) { y[bh * D + d] = sig[h * P.n + P.pos] * res[d] / (res[D] + P.eps); }
}`,
    }));
}

/** Where a decayed recurrent state stands: its options, table length and position. */
export interface DecayCursor {
  o: DecayOptions;
  /** table length: the most positions the state will see, plus one */
  n: number;
  /** tokens already in the state */
  pos: number;
}

function check(state: LinearAttentionState, k: Tensor, v: Tensor, c: DecayCursor, L: number) {
  const [B, , H, F] = k.shape;
  const D = v.shape[3];
  const W = 1 + F + F * F;
  if (state.kv.shape.join() !== [B, H, D, W].join() || c.pos + L >= c.n) {
    throw new Error(
      `decayed linear attention state: k ${shapeStr(k.shape)}, state ${
        shapeStr(state.kv.shape)
      }, positions ${c.pos}+${L} of ${c.n - 1}`,
    );
  }
  return { B, H, F, D, g: checkGeometry({ B, L, H, F, D }) };
}

/** Adds a prompt (k: [B, L, H, F], v: [B, L, H, D]) to a decayed state; advances the cursor. */
export function decayPrefill(
  state: LinearAttentionState,
  k: Tensor,
  v: Tensor,
  c: DecayCursor,
): void {
  const L = k.shape[1];
  const { B, H, D, g } = check(state, k, v, c, L);
  const t = decayTables(k.engine, H, c.n, c.o);
  const total = B * H * (D + 1) * g.FEU;
  k.engine.run(
    prefillKernel(g),
    { k, v, pw: t.pw, kv: state.kv, ks: state.k },
    { total, L, H, D, n: c.n },
    grid1d(total),
  );
  c.pos += L;
}

/** One decayed step (q, k: [B, 1, H, F], v: [B, 1, H, D]) -> [B, 1, H, D]; advances the cursor. */
export function decayStep(
  state: LinearAttentionState,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  eps: number,
  c: DecayCursor,
): Tensor {
  const { B, H, D, g } = check(state, k, v, c, 1);
  if (k.shape[1] !== 1 || q.shape.join() !== k.shape.join()) {
    throw new Error(`decayStep: one token expected (q ${shapeStr(q.shape)})`);
  }
  const e = q.engine;
  const t = decayTables(e, H, c.n, c.o);
  const y = e.empty([B, 1, H, D]);
  e.run(
    stepKernel(g, D),
    { q, k, v, pw: t.pw, sig: t.sig, kv: state.kv, ks: state.k, y },
    { H, eps, n: c.n, pos: c.pos },
    [B * H],
  );
  c.pos += 1;
  return y;
}
