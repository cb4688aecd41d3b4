/** The Taylor feature map φ(x) = [1, x/F^¼, vec(x xᵀ)/(√2·√F)], forward and backward. */
import { defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { record } from "../../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";
import { cached, checkGeometry, common, type Geo } from "./geometry.ts";

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
