/**
 * Workgroup arrays re-declared with few, wide elements, for Mesa's GL path.
 *
 * WebGPU zero-fills workgroup memory. For GL, wgpu's shader translator writes that fill as one
 * array constructor with an argument per element, and Mesa's llvmpipe compiles it in a time that
 * grows faster than linearly with the number of elements in the shader: measured here (2 cores,
 * one kernel with one workgroup array and a loop over it) 2.5 s for 1,024 f32 elements, 23.5 s
 * for 2,048, 112 s for 4,096, 360 s for 6,000; six arrays of 1,000 f32 took longer than 180 s,
 * so the total counts, not the largest array. The same 6,000 floats as 1,500 vec4 took 66 s, as
 * 375 mat4x4 14.4 s. (dev/compile_wgsl.ts, `MESA_SHADER_CACHE_DISABLE=true
 * DENO_WEBGPU_BACKEND=gl`.)
 *
 * So on that path, before a kernel is compiled, each workgroup array of f32 / vec2<f32> /
 * vec4<f32> / u32 / i32 with at least COMPACT_MIN_FLOATS scalars is re-declared with 16 scalars
 * per element (mat4x4<f32>, mat4x2<f32> with vec2 columns, vec4<u32|i32>: 4 per element) and
 * every `name[i]` becomes the same scalar, vector or column through the wider element. Values,
 * layout of the arithmetic and results are unchanged; only the addressing differs. Arrays used
 * any other way than `name[...]` are left as they are.
 */

/** Arrays below this many scalars are left alone (1,024 f32 compile in 2.5 s). */
export const COMPACT_MIN_FLOATS = 256;

interface Plan {
  decl: string;
  access: (index: string) => string;
}

function plan(elem: string, n: number): Plan | null {
  const u = (i: string) => `u32(${i})`;
  switch (elem) {
    case "f32":
      return {
        decl: `array<mat4x4<f32>, ${Math.ceil(n / 16)}>`,
        access: (i) => `[${u(i)} / 16u][(${u(i)} / 4u) % 4u][${u(i)} % 4u]`,
      };
    case "vec4<f32>":
      return {
        decl: `array<mat4x4<f32>, ${Math.ceil(n / 4)}>`,
        access: (i) => `[${u(i)} / 4u][${u(i)} % 4u]`,
      };
    case "vec2<f32>":
      return {
        decl: `array<mat4x2<f32>, ${Math.ceil(n / 4)}>`,
        access: (i) => `[${u(i)} / 4u][${u(i)} % 4u]`,
      };
    case "u32":
    case "i32":
      return {
        decl: `array<vec4<${elem}>, ${Math.ceil(n / 4)}>`,
        access: (i) => `[${u(i)} / 4u][${u(i)} % 4u]`,
      };
  }
  return null;
}

const SCALARS: Record<string, number> = { "f32": 1, "u32": 1, "i32": 1, "vec2<f32>": 2 };

const DECL =
  /var<workgroup>\s+([A-Za-z_]\w*)\s*:\s*array<\s*(f32|u32|i32|vec2<f32>|vec4<f32>)\s*,\s*(\d+)u?\s*>\s*;/g;

/** The index of the `]` closing the `[` at `open`, or -1. */
function closing(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === "[") depth++;
    else if (code[i] === "]" && --depth === 0) return i;
  }
  return -1;
}

/** Rewrites every `name[...]` of the planned arrays, inner accesses first. */
function rewrite(code: string, plans: Map<string, Plan>): string {
  if (plans.size === 0) return code;
  const names = new RegExp(`(?<![\\w.])(${[...plans.keys()].join("|")})\\s*\\[`, "g");
  let out = "";
  let at = 0;
  for (;;) {
    names.lastIndex = at;
    const m = names.exec(code);
    if (!m) return out + code.slice(at);
    const open = m.index + m[0].length - 1;
    const close = closing(code, open);
    if (close < 0) return out + code.slice(at);
    const index = rewrite(code.slice(open + 1, close), plans);
    out += code.slice(at, m.index) + m[1] + plans.get(m[1])!.access(index);
    at = close + 1;
  }
}

/** `code` with its large workgroup arrays compacted (see the file comment); `code` if none. */
export function compactWorkgroupArrays(code: string, minFloats = COMPACT_MIN_FLOATS): string {
  const plans = new Map<string, Plan>();
  const decls: [string, string][] = [];
  for (const m of code.matchAll(DECL)) {
    const [whole, name, elem, count] = m;
    const n = Number(count);
    if (n * (SCALARS[elem] ?? 4) < minFloats) continue;
    // every use must be an indexing (`name[`), apart from the declaration itself
    const uses = code.match(new RegExp(`(?<![\\w.])${name}(?!\\w)`, "g"))!.length;
    const indexed = code.match(new RegExp(`(?<![\\w.])${name}\\s*\\[`, "g"))?.length ?? 0;
    if (uses !== indexed + 1) continue;
    const p = plan(elem, n)!;
    plans.set(name, p);
    decls.push([whole, `var<workgroup> ${name}: ${p.decl};`]);
  }
  if (plans.size === 0) return code;
  let out = code;
  for (const [from, to] of decls) out = out.replace(from, () => to);
  return rewrite(out, plans);
}
