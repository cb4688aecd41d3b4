/** Shared WGSL snippets and dispatch-shape helpers for the kernels. */
import type { Grid } from "../tensor/engine.ts";

/** Threads per workgroup of the 1-D kernels. */
export const WG = 256;

/** Highest workgroup count per grid dimension that WebGPU guarantees. */
export const MAX_GRID = 65535;

/**
 * A 1-D launch of `n` threads as a 2-D grid (WebGPU caps each dimension at
 * 65535 workgroups). Pair with LINEAR_ID in the shader.
 */
export function grid1d(n: number, wg = WG): Grid {
  const groups = Math.ceil(n / wg);
  if (groups <= MAX_GRID) return [groups, 1, 1];
  return [MAX_GRID, Math.ceil(groups / MAX_GRID), 1];
}

/** `linear_id(wid, nwg, lid, wg)`: the flat thread index of a grid1d launch. */
export const LINEAR_ID = /* wgsl */ `
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * wg + lid;
}
`;

/** The builtins a grid1d entry point takes. */
export const ENTRY_1D =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, " +
  "@builtin(local_invocation_index) lid: u32";

/** Numerically safe sigmoid and SiLU for f32. */
export const SIGMOID = /* wgsl */ `
fn sigmoid(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
fn silu(x: f32) -> f32 { return x * sigmoid(x); }
fn silu_grad(x: f32) -> f32 { let s = sigmoid(x); return s * (1.0 + x * (1.0 - s)); }
`;

export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * WGSL: tree-merges each thread's running (max m, sum of exp s) with those of
 * the other `width` threads of its row (a power of two), through the
 * workgroup arrays red_m / red_s; `lane` is the thread's index in its row. The
 * row's results end in red_m[lid - lane], red_s[lid - lane]. Fixed order.
 */
export function mergeMaxSumWgsl(width: number, lane: string): string {
  return `red_m[lid] = m;
  red_s[lid] = s;
  workgroupBarrier();
  for (var off = ${width >> 1}u; off > 0u; off = off >> 1u) {
    if (${lane} < off) {
      let m2 = red_m[lid + off];
      let mm = max(m, m2);
      s = s * exp(m - mm) + red_s[lid + off] * exp(m2 - mm);
      m = mm;
      red_m[lid] = m;
      red_s[lid] = s;
    }
    workgroupBarrier();
  }`;
}
