/** Shared WGSL snippets and dispatch-shape helpers for the kernels. */

export { ENTRY_1D, grid1d, LINEAR_ID, MAX_GRID, WG } from "../tensor/grid.ts";

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
