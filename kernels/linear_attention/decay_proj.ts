/**
 * The data-dependent part of the decay (`decay_proj`, the reference's
 * notebooks/03-31-decay.ipynb): D[b, h, i, j] = p[b, i, h]·M_h[i, j] with
 * p = decay_proj(x), a per-row scale of the (undecayed-denominator) output:
 * y'[b, i, h, :] = p[b, i, h]·y[b, i, h, :]. Differentiable:
 * gy = p·gy', gp = Σ_d gy'·y. One thread per element (forward, gy) or per row
 * (gp, D terms in order).
 */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import { shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { record } from "../../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached } from "./geometry.ts";

function scaleKernel(): Kernel {
  return cached("head_scale", () =>
    defineKernel({
      name: "la_head_scale",
      params: { n: "u32", D: "u32" },
      bindings: { y: "read", p: "read", out: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  out[i] = p[i / P.D] * y[i];
}`,
    }));
}

function gpKernel(): Kernel {
  return cached("head_scale_gp", () =>
    defineKernel({
      name: "la_head_scale_gp",
      params: { rows: "u32", D: "u32" },
      bindings: { gy: "read", y: "read", gp: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let r = linear_id(wid, nwg, lid, 256u);
  if (r >= P.rows) { return; }
  var s = 0.0;
  for (var d = 0u; d < P.D; d++) { s += gy[r * P.D + d] * y[r * P.D + d]; }
  gp[r] = s;
}`,
    }));
}

/** y [B, L, H, D] scaled per (b, i, h) by p [B, L, H]. Differentiable in both. */
export function headScale(y: Tensor, p: Tensor): Tensor {
  const D = y.shape[y.rank - 1];
  const rows = y.size / D;
  if (p.size !== rows) throw new Error(`headScale: y ${shapeStr(y.shape)}, p ${shapeStr(p.shape)}`);
  const e = y.engine;
  const out = e.empty(y.shape);
  e.run(scaleKernel(), { y, p, out }, { n: y.size, D }, grid1d(y.size));
  record("head_scale", [y, p], [out], [y, p], ([g], [ys, ps]) => {
    if (!g) return [null, null];
    let gy: Tensor | null = null, gp: Tensor | null = null;
    if (y.requiresGrad) {
      gy = e.empty(y.shape);
      e.run(scaleKernel(), { y: g, p: ps, out: gy }, { n: y.size, D }, grid1d(y.size));
    }
    if (p.requiresGrad) {
      gp = e.empty(p.shape);
      e.run(gpKernel(), { gy: g, y: ys, gp }, { rows, D }, grid1d(rows));
    }
    return [gy, gp];
  });
  return out;
}
