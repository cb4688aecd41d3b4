/**
 * Elementwise kernels: fill, copy, accumulate (dst += src), add, mul, scale,
 * axpy, silu and the SwiGLU pieces. All tensors are contiguous and of equal
 * size. Each differentiable op records its backward on the tape.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, SIGMOID } from "./wgsl.ts";

function sameSize(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.size !== ts[0].size) {
      throw new Error(`${op}: sizes differ (${ts.map((x) => shapeStr(x.shape)).join(" vs ")})`);
    }
  }
}

const cache = new Map<string, Kernel>();

/**
 * out[i] = EXPR over inputs named in `ins` (each `x_` = x[i]), params P.a, P.b
 * (f32); `o_` is the old out[i] (for in-place updates: a buffer may not be
 * bound twice in one dispatch when one binding writes). `vec4`: each thread
 * moves one vec4 of every array (16-byte loads and stores; sizes divisible
 * by 4) and evaluates EXPR on its four components.
 */
function mapKernel(
  name: string,
  ins: string[],
  expr: string,
  dtype: string,
  vec4: boolean,
): Kernel {
  const key = `${name}${vec4 ? "_v4" : ""}`;
  let k = cache.get(key);
  if (!k) {
    const ty = vec4 ? `vec4<${dtype}>` : dtype;
    const bindings: Record<string, { access: "read" | "rw"; type: string }> = {};
    for (const i of ins) bindings[i] = { access: "read", type: `array<${ty}>` };
    bindings.out = { access: "rw", type: `array<${ty}>` };
    const usesOld = /\bo_\b/.test(expr);
    let body: string;
    if (!vec4) {
      let loads = ins.map((i) => `let ${i}_ = ${i}[i];`).join(" ");
      if (usesOld) loads += " let o_ = out[i];";
      body = `${loads}\n  out[i] = ${expr};`;
    } else {
      const loads = ins.map((i) => `let ${i}v = ${i}[i];`).join(" ") +
        (usesOld ? " let ov = out[i];" : "");
      const comps = ins.map((i) => `let ${i}_ = ${i}v[c];`).join(" ") +
        (usesOld ? " let o_ = ov[c];" : "");
      // grid-stride: each thread moves ~4 vec4 of every array (as the copy
      // kernel that reaches the copy bandwidth does)
      body = `let nth = nwg.x * nwg.y * 256u;
  for (var i = i0; i < P.n; i += nth) {
  ${loads}
  var r: vec4<${dtype}>;
  for (var c = 0u; c < 4u; c++) { ${comps} r[c] = ${expr}; }
  out[i] = r;
  }`;
    }
    k = defineKernel({
      name: `ew_${key}`,
      params: { n: "u32", a: "f32", b: "f32" },
      bindings,
      code: `${LINEAR_ID}${SIGMOID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  ${
        vec4
          ? "let i0 = linear_id(wid, nwg, lid, 256u);"
          : "let i = linear_id(wid, nwg, lid, 256u);\n  if (i >= P.n) { return; }"
      }
  ${body}
}`,
    });
    cache.set(key, k);
  }
  return k;
}

function launch(
  name: string,
  ins: Record<string, Tensor>,
  out: Tensor,
  expr: string,
  a = 0,
  b = 0,
) {
  // every tensor starts 256-byte aligned, so vec4 access only needs size % 4 == 0
  const vec4 = out.size % 4 === 0 && out.size > 0;
  const k = mapKernel(name, Object.keys(ins), expr, out.dtype, vec4);
  const n = vec4 ? out.size / 4 : out.size;
  out.engine.run(k, { ...ins, out }, { n, a, b }, grid1d(vec4 ? Math.ceil(n / 4) : n));
}

// ------------------------------------------------------------ non-recording

/** t[:] = value (any dtype; value converted). */
export function fill(t: Tensor, value: number): Tensor {
  const expr = t.dtype === "f32" ? "P.a" : `${t.dtype}(P.a)`;
  launch(`fill_${t.dtype}`, {}, t, expr, value);
  return t;
}

/** dst += s·src (in place; s defaults to 1). */
export function accumulate(dst: Tensor, src: Tensor, s = 1): Tensor {
  sameSize("accumulate", dst, src);
  if (s === 1) launch("accumulate", { x: src }, dst, "o_ + x_");
  else launch("accumulate_scaled", { x: src }, dst, "o_ + P.a * x_", s);
  return dst;
}

/** dst = src (any dtype, equal sizes). */
export function copyInto(dst: Tensor, src: Tensor): Tensor {
  sameSize("copy", dst, src);
  launch(`copy_${dst.dtype}`, { x: src }, dst, "x_");
  return dst;
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
