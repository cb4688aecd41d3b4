/**
 * SwiGLU, u ⊙ silu(g), under f16 mixed precision: the output is computed in
 * f32 from the f32 inputs (the same kernel as fp32), but the inputs saved for
 * backward are f16 copies: the MLP's value and gate halves (and BaseConv's
 * gate and convolution output) are the largest activations a block keeps, so
 * this halves them. Backward widens them in registers and computes
 * du = dy·silu(g), dg = dy·u·silu'(g) in f32, in one pass.
 */
import { defineKernel } from "../../tensor/engine.ts";
import { record } from "../../tensor/tape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { noGrad } from "../../tensor/tape.ts";
import { swiglu as swigluF32 } from "../elementwise.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, SIGMOID } from "../wgsl.ts";
import { type Autocast, autocast } from "./autocast.ts";
import { F16_WGSL } from "./cast.ts";

const BACKWARD = defineKernel({
  name: "swiglu_f16_bwd",
  params: { n: "u32" },
  bindings: {
    dy: "read",
    u: { access: "read", type: "array<u32>" },
    g: { access: "read", type: "array<u32>" },
    du: "rw",
    dg: "rw",
  },
  code: /* wgsl */ `${F16_WGSL}${SIGMOID}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  let sh = 16u * (i & 1u);
  let uv = f16_value((u[i >> 1u] >> sh) & 0xffffu);
  let gv = f16_value((g[i >> 1u] >> sh) & 0xffffu);
  let d = dy[i];
  du[i] = d * silu(gv);
  dg[i] = d * uv * silu_grad(gv);
}`,
});

/** swiglu(u, g) in f16 mixed precision (see the module comment). */
export function swigluF16(ac: Autocast, u: Tensor, g: Tensor): Tensor {
  if (!u.requiresGrad || !g.requiresGrad) return swigluF32(u, g);
  const out = noGrad(() => swigluF32(u, g));
  const u16 = ac.cast(u), g16 = ac.cast(g);
  record("swiglu_f16", [u, g], [out], [u16, g16], ([go], [us, gs]) => {
    if (!go) return [null, null];
    const e = go.engine;
    const du = e.empty(u.shape), dg = e.empty(g.shape);
    e.run(BACKWARD, { dy: go, u: us, g: gs, du, dg }, { n: go.size }, grid1d(go.size));
    return [du, dg];
  });
  u16.dispose();
  g16.dispose();
  return out;
}

/** The model's SwiGLU: f16-saved inputs while an Autocast is active, else fp32. */
export function swiglu(u: Tensor, g: Tensor): Tensor {
  const ac = autocast();
  return ac ? swigluF16(ac, u, g) : swigluF32(u, g);
}
