/**
 * The non-recording elementwise kernels the tensor layer itself needs (fill,
 * accumulate, copy: the tape's gradient sums and zeroed buffers) and the
 * generated map kernel behind them and behind kernels/elementwise.ts.
 */
import { defineKernel, type Kernel } from "./engine.ts";
import { shapeStr, type Tensor } from "./tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "./grid.ts";

export function sameSize(op: string, ...ts: Tensor[]): void {
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
export function mapKernel(
  name: string,
  ins: string[],
  expr: string,
  dtype: string,
  vec4: boolean,
  prelude = "",
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
      code: `${LINEAR_ID}${prelude}
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

export function launch(
  name: string,
  ins: Record<string, Tensor>,
  out: Tensor,
  expr: string,
  a = 0,
  b = 0,
  prelude = "",
) {
  // every tensor starts 256-byte aligned, so vec4 access only needs size % 4 == 0
  const vec4 = out.size % 4 === 0 && out.size > 0;
  const k = mapKernel(name, Object.keys(ins), expr, out.dtype, vec4, prelude);
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
