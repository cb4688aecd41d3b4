/**
 * Kernels of the recurrent (generation) view of the BaseConv and sliding-
 * window mixers (the reference's `ShortConvolution.step` and the KV cache of
 * `flash_attn_with_kvcache`). The linear-attention state kernels live with the
 * linear-attention views.
 *
 * - BaseConv: the conv tail holds the last K−1 inputs u1 of each channel
 *   (oldest first, zeros before the sequence start). `convTail` fills it from
 *   a prompt; `convStepGated` computes c_t = Σ_{k<K−1} w[ch, k]·tail[k] +
 *   w[ch, K−1]·u1_t (the training kernel's taps in the same order), shifts
 *   the tail and gates (below).
 * - Sliding window / MHA: a ring cache of the S most recent (rotated) keys and
 *   values, slot = position mod S. `kvCacheWrite` writes positions p0..p0+L−1
 *   (only the last S survive); `windowAttendStep` attends the query at
 *   position p over keys max(0, p − left)..p with an online softmax (f32
 *   statistics), one workgroup per (batch, head).
 * - Fused for one token per sequence (fewer dispatches; decode is
 *   dispatch-bound at small batch): `convStepGated` reads u1 and u2 from the
 *   in_proj output z = [u1 | u2] and returns u2 ⊙ silu(conv(u1));
 *   `swigluHalves` returns a ⊙ silu(b) for h = [a | b] (the MLP's split + SwiGLU).
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, SIGMOID, WG } from "./wgsl.ts";
import { MAX_HEAD_DIM } from "./sliding_window.ts";

const cache = new Map<string, Kernel>();
function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

function tailKernel(): Kernel {
  return getKernel("tail", () =>
    defineKernel({
      name: "conv_tail",
      params: { n: "u32", L: "u32", C: "u32", T: "u32" },
      bindings: { x: "read", tail: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let ch = i % P.C;
  let s = (i / P.C) % P.T;
  let b = i / (P.C * P.T);
  // tail slot s holds position L − T + s
  if (P.L + s >= P.T) {
    let t = P.L + s - P.T;
    tail[i] = x[(b * P.L + t) * P.C + ch];
  } else {
    tail[i] = 0.0;
  }
}`,
    }));
}

/** The conv tail [B, K−1, C] of a prompt x [B, L, C] (zeros before position 0). */
export function convTail(x: Tensor, K: number): Tensor {
  const [B, L, C] = x.shape;
  if (x.rank !== 3 || K < 2) throw new Error(`convTail: x ${shapeStr(x.shape)}, K ${K}`);
  const tail = x.engine.empty([B, K - 1, C], "f32", "conv tail");
  x.engine.run(tailKernel(), { x, tail }, { n: tail.size, L, C, T: K - 1 }, grid1d(tail.size));
  return tail;
}

function writeKernel(): Kernel {
  return getKernel("kvwrite", () =>
    defineKernel({
      name: "kv_cache_write",
      params: { n: "u32", L: "u32", S: "u32", H: "u32", Dh: "u32", p0: "u32" },
      bindings: { qkv: "read", kc: "rw", vc: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let hd = i % (P.H * P.Dh);
  let slot = (i / (P.H * P.Dh)) % P.S;
  let b = i / (P.H * P.Dh * P.S);
  let last = P.p0 + P.L - 1u;
  // the latest position t <= last with t mod S == slot
  let t = last - ((last % P.S + P.S - slot) % P.S);
  if (t < P.p0 || t > last) { return; }
  let l = t - P.p0;
  let src = ((b * P.L + l) * 3u) * P.H * P.Dh + hd;
  kc[i] = qkv[src + P.H * P.Dh];
  vc[i] = qkv[src + 2u * P.H * P.Dh];
}`,
    }));
}

function attendKernel(): Kernel {
  return getKernel("attend", () =>
    defineKernel({
      name: "window_attend_step",
      params: { S: "u32", H: "u32", Dh: "u32", pos: "u32", start: "u32", scale: "f32" },
      bindings: { qkv: "read", kc: "read", vc: "read", o: "rw" },
      code: /* wgsl */ `
const TW: u32 = ${MAX_HEAD_DIM}u;
var<workgroup> qs: array<f32, ${MAX_HEAD_DIM}>;
var<workgroup> sc: array<f32, ${MAX_HEAD_DIM}>;
@compute @workgroup_size(${MAX_HEAD_DIM})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = wid.x;
  let b = bh / P.H;
  let h = bh % P.H;
  let HD = P.H * P.Dh;
  if (lid < P.Dh) { qs[lid] = qkv[b * 3u * HD + h * P.Dh + lid]; }
  workgroupBarrier();
  var m = -3.4028234e38;
  var l = 0.0;
  var acc = 0.0;
  for (var t0 = P.start; t0 <= P.pos; t0 += TW) {
    let t = t0 + lid;
    var s = -3.4028234e38;
    if (t <= P.pos) {
      let kb = ((b * P.S + t % P.S) * P.H + h) * P.Dh;
      var dot = 0.0;
      for (var d = 0u; d < P.Dh; d++) { dot += qs[d] * kc[kb + d]; }
      s = dot * P.scale;
    }
    sc[lid] = s;
    workgroupBarrier();
    let n = min(TW, P.pos + 1u - t0);
    var mt = m;
    for (var j = 0u; j < n; j++) { mt = max(mt, sc[j]); }
    let c = exp(m - mt);
    l *= c;
    acc *= c;
    for (var j = 0u; j < n; j++) {
      let p = exp(sc[j] - mt);
      l += p;
      if (lid < P.Dh) { acc += p * vc[((b * P.S + (t0 + j) % P.S) * P.H + h) * P.Dh + lid]; }
    }
    m = mt;
    workgroupBarrier();
  }
  if (lid < P.Dh) { o[bh * P.Dh + lid] = acc / l; }
}`,
    }));
}

/** Writes the k, v parts of rotated qkv [B, L, 3, H, Dh] at positions p0.. into the ring caches [B, S, H, Dh]. */
export function kvCacheWrite(qkv: Tensor, kc: Tensor, vc: Tensor, p0: number): void {
  const [B, L, , H, Dh] = qkv.shape;
  const S = kc.shape[1];
  if (kc.shape.join() !== [B, S, H, Dh].join() || vc.shape.join() !== kc.shape.join()) {
    throw new Error(`kvCacheWrite: qkv ${shapeStr(qkv.shape)}, cache ${shapeStr(kc.shape)}`);
  }
  qkv.engine.run(
    writeKernel(),
    { qkv, kc, vc },
    { n: kc.size, L, S, H, Dh, p0 },
    grid1d(kc.size),
  );
}

/**
 * Softmax attention of the query at position `pos` (rotated qkv [B, 1, 3, H, Dh])
 * over the cached keys max(0, pos − left)..pos; returns [B, 1, H, Dh].
 */
export function windowAttendStep(
  qkv: Tensor,
  kc: Tensor,
  vc: Tensor,
  pos: number,
  left: number,
  scale: number,
): Tensor {
  const [B, L, , H, Dh] = qkv.shape;
  const S = kc.shape[1];
  const start = Math.max(0, pos - left);
  if (L !== 1 || Dh > MAX_HEAD_DIM || pos - start + 1 > S) {
    throw new Error(
      `windowAttendStep: qkv ${shapeStr(qkv.shape)}, cache ${S} slots, keys ${start}..${pos}`,
    );
  }
  const o = qkv.engine.empty([B, 1, H, Dh]);
  qkv.engine.run(
    attendKernel(),
    { qkv, kc, vc, o },
    { S, H, Dh, pos, start, scale },
    [B * H],
  );
  return o;
}

function gatedStepKernel(K: number): Kernel {
  return getKernel(`gated_${K}`, () =>
    defineKernel({
      name: `conv_step_gated_k${K}`,
      params: { n: "u32", C: "u32" },
      bindings: { z: "read", w: "read", tail: "rw", y: "rw" },
      code: /* wgsl */ `${LINEAR_ID}${SIGMOID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let ch = i % P.C;
  let b = i / P.C;
  let xt = z[b * 2u * P.C + ch];
  var acc = 0.0;
  for (var k = 0u; k < ${K - 1}u; k++) {
    acc += w[ch * ${K}u + k] * tail[(b * ${K - 1}u + k) * P.C + ch];
  }
  acc += w[ch * ${K}u + ${K - 1}u] * xt;
  for (var k = 0u; k + 1u < ${K - 1}u; k++) {
    tail[(b * ${K - 1}u + k) * P.C + ch] = tail[(b * ${K - 1}u + k + 1u) * P.C + ch];
  }
  tail[(b * ${K - 1}u + ${K - 2}u) * P.C + ch] = xt;
  y[i] = z[b * 2u * P.C + P.C + ch] * silu(acc);
}`,
    }));
}

function halvesKernel(): Kernel {
  return getKernel("halves", () =>
    defineKernel({
      name: "swiglu_halves",
      params: { n: "u32", C: "u32" },
      bindings: { h: "read", y: "rw" },
      code: /* wgsl */ `${LINEAR_ID}${SIGMOID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let ch = i % P.C;
  let r = i / P.C;
  y[i] = h[r * 2u * P.C + ch] * silu(h[r * 2u * P.C + P.C + ch]);
}`,
    }));
}

/**
 * One gated conv step of BaseConv: z = [u1 | u2] [B, 1, 2C] (in_proj output),
 * w [C, 1, K]; updates tail [B, K−1, C] with u1; returns u2 ⊙ silu(conv(u1)) [B, 1, C].
 */
export function convStepGated(tail: Tensor, z: Tensor, w: Tensor): Tensor {
  const [B, T, C] = tail.shape;
  const K = T + 1;
  if (z.size !== B * 2 * C || w.size !== C * K) {
    throw new Error(
      `convStepGated: z ${shapeStr(z.shape)}, w ${shapeStr(w.shape)}, tail ${shapeStr(tail.shape)}`,
    );
  }
  const y = z.engine.empty([B, 1, C]);
  z.engine.run(gatedStepKernel(K), { z, w, tail, y }, { n: B * C, C }, grid1d(B * C));
  return y;
}

/** a ⊙ silu(b) for h = [a | b] along the last axis: [..., 2C] -> [..., C]. Inference only. */
export function swigluHalves(h: Tensor): Tensor {
  const C2 = h.shape[h.rank - 1];
  if (C2 % 2) throw new Error(`swigluHalves: odd last axis ${shapeStr(h.shape)}`);
  const C = C2 / 2;
  const y = h.engine.empty([...h.shape.slice(0, -1), C]);
  h.engine.run(halvesKernel(), { h, y }, { n: y.size, C }, grid1d(y.size));
  return y;
}
