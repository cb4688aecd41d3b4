/**
 * Dispatch shapes of the 1-D kernels: a launch of n threads as a 2-D grid and
 * the WGSL that turns the grid back into a flat thread index.
 */
import type { Grid } from "./engine.ts";

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
