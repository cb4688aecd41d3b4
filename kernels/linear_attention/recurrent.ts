/**
 * The recurrent (generation) view: a state Σ v_t φ(k_t)ᵀ, Σ φ(k_t) per layer,
 * a prompt added at once (prefill), then one token per step.
 */
import { defineKernel, engine, type Kernel } from "../../tensor/engine.ts";
import { shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { fill } from "../elementwise.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, checkGeometry, common, type Dims, type Geo } from "./geometry.ts";

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

/**
 * Generation state of one linear-attention layer (`LinearAttention.allocate_inference_cache`'s
 * layout).
 */
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
