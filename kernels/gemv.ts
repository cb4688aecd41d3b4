/**
 * Skinny products for decoding: y[M, N] = x[M, K]·W[N, K]ᵀ (+ bias[N]) with
 * M ≤ 16 rows (one token per sequence), W in PyTorch's Linear layout. Decode is
 * memory-bound: the tiled GEMM pads M to its 64-row tile, while here each
 * weight is read once, as vec4, and every row of x reuses it from registers.
 *
 * One workgroup of 256 threads per 32 weight rows: 8 lanes per row stride over
 * K in vec4 steps (lane l reads k = 4l, 4l + 32, ...: each row's 8 lanes read
 * 128 contiguous bytes), keeping M accumulators; the 8 lanes are then summed
 * in a fixed order through workgroup memory (bit-reproducible). Not recorded
 * on the tape (inference only); K must be a multiple of 4.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { MAX_GRID } from "./wgsl.ts";

/** Most rows of x the kernel keeps accumulators for. */
export const GEMV_MAX_ROWS = 16;
const ROWS = 32;
const LANES = 8;

const cache = new Map<string, Kernel>();

function kernel(M: number, bias: boolean): Kernel {
  const key = `${M}_${bias}`;
  let k = cache.get(key);
  if (k) return k;
  const vec4 = { access: "read" as const, type: "array<vec4<f32>>" };
  k = defineKernel({
    name: `gemv_m${M}${bias ? "_bias" : ""}`,
    params: { N: "u32", K4: "u32", gx: "u32" },
    bindings: bias ? { x: vec4, w: vec4, bias: "read", y: "rw" } : { x: vec4, w: vec4, y: "rw" },
    code: /* wgsl */ `
var<workgroup> red: array<f32, ${ROWS * LANES}>;
@compute @workgroup_size(${ROWS * LANES})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = lid / ${LANES}u;
  let lane = lid % ${LANES}u;
  let n = (wid.y * P.gx + wid.x) * ${ROWS}u + r;
  var acc: array<f32, ${M}>;
  for (var m = 0u; m < ${M}u; m++) { acc[m] = 0.0; }
  if (n < P.N) {
    for (var k = lane; k < P.K4; k += ${LANES}u) {
      let wv = w[n * P.K4 + k];
      for (var m = 0u; m < ${M}u; m++) { acc[m] += dot(wv, x[m * P.K4 + k]); }
    }
  }
  for (var m = 0u; m < ${M}u; m++) {
    red[lid] = acc[m];
    workgroupBarrier();
    if (lane == 0u && n < P.N) {
      var s = 0.0;
      for (var l = 0u; l < ${LANES}u; l++) { s += red[lid + l]; }
      y[m * P.N + n] = ${bias ? "s + bias[n]" : "s"};
    }
    workgroupBarrier();
  }
}`,
  });
  cache.set(key, k);
  return k;
}

/** Whether `gemv` takes x [..., K] with `rows` rows. */
export function gemvFits(rows: number, K: number): boolean {
  return rows >= 1 && rows <= GEMV_MAX_ROWS && K % 4 === 0;
}

/** y = x·Wᵀ (+ bias): x [..., K] with ≤ 16 rows, W [N, K] -> [..., N]. Inference only. */
export function gemv(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const K = x.shape[x.rank - 1];
  const M = x.size / K;
  const N = w.shape[0];
  if (w.rank !== 2 || w.shape[1] !== K || !gemvFits(M, K) || (bias && bias.size !== N)) {
    throw new Error(`gemv: x ${shapeStr(x.shape)}, w ${shapeStr(w.shape)}`);
  }
  const e = x.engine;
  const y = e.empty([...x.shape.slice(0, -1), N]);
  const groups = Math.ceil(N / ROWS);
  const gx = Math.min(groups, MAX_GRID);
  const gy = Math.ceil(groups / gx);
  e.run(kernel(M, !!bias), bias ? { x, w, bias, y } : { x, w, y }, { N, K4: K / 4, gx }, [gx, gy]);
  return y;
}
