/**
 * Fresh benchmark inputs made on the GPU (no uploads, never zeros): element i
 * of the input with a given seed is a multiple of 2⁻²³ in [-1, 1) from a
 * 32-bit hash that the host evaluates too (`valueJs`), so results can be
 * spot-checked against float64.
 */
import { defineKernel, type Engine } from "../tensor/engine.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { grid1d } from "../kernels/wgsl.ts";

/** lowbias32 (Chris Wellons): a good 32-bit integer hash, identical in WGSL and JS. */
const HASH_WGSL = /* wgsl */ `
fn hash(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u; x *= 0x7feb352du;
  x ^= x >> 15u; x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}`;

function hashJs(x0: number): number {
  let x = x0 >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** Element i of the input with this seed (scale 1): a multiple of 2⁻²³ in [-1, 1), exact in f32. */
export function valueJs(seed: number, i: number): number {
  return (hashJs((i ^ Math.imul(seed, 0x9e3779b9)) >>> 0) >>> 8) * 2 ** -23 - 1;
}

const FILL = defineKernel({
  name: "bench_fill_hash",
  params: { n: "u32", seed: "u32", scale: "f32" },
  bindings: { x: "rw" },
  code: `${HASH_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i < P.n) { x[i] = (f32(hash(i ^ (P.seed * 0x9e3779b9u)) >> 8u) * exp2(-23.0) - 1.0) * P.scale; }
}`,
});

/** The same values rounded to f16 (one f16 per invocation). */
const FILL_F16 = defineKernel({
  name: "bench_fill_hash_f16",
  params: { n: "u32", seed: "u32", scale: "f32" },
  bindings: { x: { access: "rw", type: "array<f16>" } },
  f16: true,
  code: `${HASH_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i < P.n) { x[i] = f16((f32(hash(i ^ (P.seed * 0x9e3779b9u)) >> 8u) * exp2(-23.0) - 1.0) * P.scale); }
}`,
});

/**
 * A tensor of hash values in [-scale, scale) (uniform; variance scale²/3);
 * f16: rounded to nearest (the host's value is `Math.f16round(valueJs(...))` at scale 1).
 */
export function randomTensor(
  e: Engine,
  shape: number[],
  seed: number,
  scale = 1,
  dtype: "f32" | "f16" = "f32",
): Tensor {
  const t = e.empty(shape, dtype);
  e.run(dtype === "f16" ? FILL_F16 : FILL, { x: t }, { n: t.size, seed, scale }, grid1d(t.size));
  return t;
}
