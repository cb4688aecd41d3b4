/**
 * Elementwise kernels: fill, copy, accumulate (dst += src), add, mul, scale,
 * axpy, silu and the SwiGLU pieces. All tensors are contiguous and of equal
 * size. Each differentiable op records its backward on the tape.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { copyInto, launch as launchMap, sameSize } from "../tensor/elementwise.ts";
import { SIGMOID } from "./wgsl.ts";

export { accumulate, copyInto, fill } from "../tensor/elementwise.ts";

/** A map kernel with the sigmoid / SiLU helpers in scope. */
function launch(
  name: string,
  ins: Record<string, Tensor>,
  out: Tensor,
  expr: string,
  a = 0,
  b = 0,
): void {
  launchMap(name, ins, out, expr, a, b, SIGMOID);
}

// ------------------------------------------------------------ differentiable

/** A new tensor with x's contents. */
export function clone(x: Tensor): Tensor {
  const out = x.engine.empty(x.shape, x.dtype);
  copyInto(out, x);
  record("clone", [x], [out], [], ([g]) => [g ? clone(g) : null]);
  return out;
}

export function add(x: Tensor, y: Tensor): Tensor {
  sameSize("add", x, y);
  const out = x.engine.empty(x.shape);
  launch("add", { x, y }, out, "x_ + y_");
  record("add", [x, y], [out], [], ([g]) => [g, g]);
  return out;
}

export function sub(x: Tensor, y: Tensor): Tensor {
  sameSize("sub", x, y);
  const out = x.engine.empty(x.shape);
  launch("sub", { x, y }, out, "x_ - y_");
  record("sub", [x, y], [out], [], ([g]) => [g, g ? scale(g, -1) : null]);
  return out;
}

export function mul(x: Tensor, y: Tensor): Tensor {
  sameSize("mul", x, y);
  const out = x.engine.empty(x.shape);
  launch("mul", { x, y }, out, "x_ * y_");
  record("mul", [x, y], [out], [x, y], ([g], [xs, ys]) => [
    g && x.requiresGrad ? mul(g, ys) : null,
    g && y.requiresGrad ? mul(g, xs) : null,
  ]);
  return out;
}

/** x * s (s a host number). */
export function scale(x: Tensor, s: number): Tensor {
  const out = x.engine.empty(x.shape);
  launch("scale", { x }, out, "x_ * P.a", s);
  record("scale", [x], [out], [], ([g]) => [g ? scale(g, s) : null]);
  return out;
}

/** x + s*y */
export function axpy(x: Tensor, y: Tensor, s: number): Tensor {
  sameSize("axpy", x, y);
  const out = x.engine.empty(x.shape);
  launch("axpy", { x, y }, out, "x_ + P.a * y_", s);
  record("axpy", [x, y], [out], [], ([g]) => [g, g ? scale(g, s) : null]);
  return out;
}

export function silu(x: Tensor): Tensor {
  const out = x.engine.empty(x.shape);
  launch("silu", { x }, out, "silu(x_)");
  record("silu", [x], [out], [x], ([g], [xs]) => {
    if (!g) return [null];
    const gx = x.engine.empty(x.shape);
    launch("silu_bwd", { x: xs, y: g }, gx, "y_ * silu_grad(x_)");
    return [gx];
  });
  return out;
}

/** SwiGLU from separate halves: u * silu(g). */
export function swiglu(u: Tensor, g: Tensor): Tensor {
  sameSize("swiglu", u, g);
  const out = u.engine.empty(u.shape);
  launch("swiglu", { x: u, y: g }, out, "x_ * silu(y_)");
  record("swiglu", [u, g], [out], [u, g], ([go], [us, gs]) => {
    if (!go) return [null, null];
    let gu: Tensor | null = null, gg: Tensor | null = null;
    if (u.requiresGrad) {
      gu = u.engine.empty(u.shape);
      launch("swiglu_bwd_u", { x: go, y: gs }, gu, "x_ * silu(y_)");
    }
    if (g.requiresGrad) {
      gg = u.engine.empty(u.shape);
      launch("swiglu_bwd_g", { x: go, y: us, z: gs }, gg, "x_ * y_ * silu_grad(z_)");
    }
    return [gu, gg];
  });
  return out;
}
