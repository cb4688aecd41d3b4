/**
 * Global-norm gradient clipping entirely on the GPU (the reference clips
 * after accumulation, before the optimizer step: Lightning's
 * `gradient_clip_val`, torch `clip_grad_norm_(params, max_norm, 2)`):
 *   total = ||all gradients||₂,  coef = min(1, max_norm / (total + 1e-6)).
 *
 * Two deterministic stages, no atomics, fixed reduction order:
 *   1. `clip_sumsq`, one dispatch per chunk of the ParamStore: thread lid of
 *      workgroup w sums x² over the vec4s w·256 + lid + k·(W·256), k = 0, 1,
 *      … (grid-stride, 4 independent loads per iteration, with a workgroup
 *      count W = min(8192, ⌈n/8192⌉) fixed by the chunk size alone), the 256
 *      thread sums are reduced by a fixed tree into one partial per
 *      workgroup. A workgroup that saw a NaN / Inf gradient (tested on the
 *      bits: a compiler may fold float NaN compares, not integer ones) writes
 *      a NaN / Inf marker instead.
 *   2. `clip_finish`, one workgroup: sums all partials of all chunks in a
 *      fixed order, writes the control block below. AdamW reads `coef` and
 *      `skip` from it, so nothing is read back to the host.
 *
 * Control block (u32 words): 0 total norm (f32 bits; NaN when a gradient is
 * NaN, else +Inf when one is infinite or the sum of squares overflows, as
 * torch would report), 1 coef (f32 bits),
 * 2 skip (1 when total is not finite: AdamW then leaves parameters and
 * moments unchanged), 3 number of steps with a non-finite norm since the
 * last resetNonFinite() (sticky, so a logging point sees it), 4 sum of
 * squares (f32 bits).
 *
 * `maxNorm = Infinity` (clipping disabled) keeps coef = 1 but still computes
 * the norm for logging and the non-finite skip. The gradient buffers are not
 * scaled in place (unlike torch): AdamW multiplies by coef when it reads them.
 */
import { defineKernel, type Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import type { ParamStore } from "../tensor/params.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { BUFFER_USAGE } from "../tensor/pool.ts";
import { ENTRY_1D } from "../kernels/wgsl.ts";

/** Words of the control block. */
export const CTL = { total: 0, coef: 1, skip: 2, nonFiniteSteps: 3, sumsq: 4, words: 8 } as const;

/** vec4s per thread (on average) in stage 1, and the cap on its workgroups per chunk. */
const SUMSQ_ITEMS = 8;
const SUMSQ_MAX_WGS = 8192;

/**
 * WGSL bit tests on f32 values (integer ops: a compiler may fold float
 * NaN/Inf compares away, it cannot fold these). `class4` gives bit 0 for a
 * NaN component and bit 1 for an infinite one.
 */
export const NONFINITE_WGSL = /* wgsl */ `
const NAN_BITS = 0x7fc00000u;
const INF_BITS = 0x7f800000u;
fn nonfinite_bits(u: u32) -> bool { return (u & INF_BITS) == INF_BITS; }
fn nonfinite4(x: vec4<f32>) -> bool {
  return any((bitcast<vec4<u32>>(x) & vec4<u32>(INF_BITS)) == vec4<u32>(INF_BITS));
}
fn class_bits(u: u32) -> u32 {
  if ((u & INF_BITS) != INF_BITS) { return 0u; }
  return select(2u, 1u, (u & 0x007fffffu) != 0u);
}
fn class4(x: vec4<f32>) -> u32 {
  let u = bitcast<vec4<u32>>(x);
  return class_bits(u.x) | class_bits(u.y) | class_bits(u.z) | class_bits(u.w);
}
`;

const TREE = (body: string) => /* wgsl */ `
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { ${body} }
    workgroupBarrier();
  }`;

const SUMSQ = defineKernel({
  name: "clip_sumsq",
  params: { n4: "u32", base: "u32", wgs: "u32" },
  bindings: {
    g: { access: "read", type: "array<vec4<f32>>" },
    part: { access: "rw", type: "array<u32>" },
  },
  code: /* wgsl */ `${NONFINITE_WGSL}
var<workgroup> ss: array<f32, 256>;
var<workgroup> sb: array<u32, 256>;
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let w = wid.y * nwg.x + wid.x;
  var acc = 0.0;
  var bad = 0u;
  if (w < P.wgs) {
    // grid-stride, 4 independent loads per iteration (clamped in range; only valid ones count)
    let stride = P.wgs * 256u;
    let last = P.n4 - 1u;
    var i = w * 256u + lid;
    loop {
      if (i >= P.n4) { break; }
      let i1 = i + stride;
      let i2 = i1 + stride;
      let i3 = i2 + stride;
      let x0 = g[i];
      let x1 = g[min(i1, last)];
      let x2 = g[min(i2, last)];
      let x3 = g[min(i3, last)];
      acc = acc + dot(x0, x0);
      if (i1 < P.n4) { acc = acc + dot(x1, x1); }
      if (i2 < P.n4) { acc = acc + dot(x2, x2); }
      if (i3 < P.n4) { acc = acc + dot(x3, x3); }
      let nf = nonfinite4(x0) || nonfinite4(x1) || nonfinite4(x2) || nonfinite4(x3);
      if (nf) { bad = bad | class4(x0) | class4(x1) | class4(x2) | class4(x3); }
      i = i3 + stride;
    }
  }
  ss[lid] = acc;
  sb[lid] = bad;
  ${TREE("ss[lid] = ss[lid] + ss[lid + s]; sb[lid] = sb[lid] | sb[lid + s];")}
  if (lid == 0u && w < P.wgs) {
    // a NaN gradient -> NaN marker, else an infinite one -> Inf, else the sum (Inf on overflow)
    var out = bitcast<u32>(ss[0]);
    if ((sb[0] & 2u) != 0u) { out = INF_BITS; }
    if ((sb[0] & 1u) != 0u) { out = NAN_BITS; }
    part[P.base + w] = out;
  }
}`,
});

const FINISH = defineKernel({
  name: "clip_finish",
  params: { count4: "u32", max_norm: "f32", clip_on: "u32" },
  bindings: {
    part: { access: "read", type: "array<vec4<u32>>" },
    ctl: { access: "rw", type: "array<u32>" },
  },
  code: /* wgsl */ `${NONFINITE_WGSL}
var<workgroup> ss: array<f32, 256>;
var<workgroup> sb: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  var bad = 0u;
  for (var i = lid; i < P.count4; i = i + 256u) {
    let q = part[i];
    acc = acc + bitcast<f32>(q.x);
    acc = acc + bitcast<f32>(q.y);
    acc = acc + bitcast<f32>(q.z);
    acc = acc + bitcast<f32>(q.w);
    bad = bad | class_bits(q.x) | class_bits(q.y) | class_bits(q.z) | class_bits(q.w);
  }
  ss[lid] = acc;
  sb[lid] = bad;
  ${TREE("ss[lid] = ss[lid] + ss[lid + s]; sb[lid] = sb[lid] | sb[lid + s];")}
  if (lid == 0u) {
    let sumsq = ss[0];
    let flags = sb[0];
    var total = sqrt(sumsq);
    let nf = flags != 0u || nonfinite_bits(bitcast<u32>(sumsq));
    // set the bits explicitly (bitcast of a runtime value: a NaN/Inf const-expression is an error)
    if (nf) { total = bitcast<f32>(INF_BITS | (flags & 0u)); }
    if ((flags & 1u) != 0u) { total = bitcast<f32>(NAN_BITS | (flags & 0u)); }
    var coef = 1.0;
    if (P.clip_on != 0u && !nf) { coef = min(1.0, P.max_norm / (total + 1e-6)); }
    ctl[${CTL.total}] = bitcast<u32>(total);
    ctl[${CTL.coef}] = bitcast<u32>(coef);
    ctl[${CTL.skip}] = select(0u, 1u, nf);
    ctl[${CTL.nonFiniteSteps}] = ctl[${CTL.nonFiniteSteps}] + select(0u, 1u, nf);
    ctl[${CTL.sumsq}] = bitcast<u32>(sumsq);
  }
}`,
});

export interface ClipReadout {
  /** global L2 norm of the gradients before clipping (NaN / Inf when non-finite) */
  norm: number;
  /** the factor AdamW applies to the gradients */
  coef: number;
  /** this step's norm was non-finite: the update is skipped */
  skip: boolean;
  /** steps with a non-finite norm since the last resetNonFinite() */
  nonFiniteSteps: number;
}

export class GradClip {
  readonly engine: Engine;
  /** the control block (u32 [CTL.words]) that AdamW binds */
  readonly ctl: Tensor;
  readonly #ctlBuf: GPUBuffer;
  readonly #partBuf: GPUBuffer;
  readonly #part: Tensor;
  readonly #chunks: { g: Tensor; n4: number; base: number; wgs: number }[] = [];
  readonly #count4: number;
  /** set by compute(), cleared by AdamW.step (guards against a stale coef) */
  computed = false;

  /** `maxNorm`: the clip threshold (> 0), or Infinity for no clipping (norm and NaN guard only). */
  constructor(readonly store: ParamStore, readonly maxNorm: number) {
    if (!(maxNorm > 0)) {
      throw new BasedError(
        `gradient clipping needs max_norm > 0 (or Infinity for none), got ${maxNorm}`,
        "set trainer.gradient_clip_val to a positive number or null",
      );
    }
    const e = this.engine = store.engine;
    let base = 0;
    for (let c = 0; c < store.grads.length; c++) {
      const n = store.chunkSizes[c];
      if (n % 4) throw new Error(`GradClip: chunk ${c} size ${n} is not a multiple of 4`);
      const n4 = n / 4;
      const wgs = Math.max(1, Math.min(SUMSQ_MAX_WGS, Math.ceil(n4 / (256 * SUMSQ_ITEMS))));
      this.#chunks.push({ g: store.chunkTensor("grads", c), n4, base, wgs });
      base += wgs;
    }
    // partials padded to whole vec4s; the padding is never written and stays zero
    this.#count4 = Math.ceil(base / 4);
    this.#partBuf = e.device.createBuffer({
      size: Math.max(256, this.#count4 * 16),
      usage: BUFFER_USAGE,
    });
    this.#part = e.wrap(this.#partBuf, 0, [this.#count4 * 4], "u32");
    this.#ctlBuf = e.device.createBuffer({ size: 256, usage: BUFFER_USAGE });
    this.ctl = e.wrap(this.#ctlBuf, 0, [CTL.words], "u32");
  }

  /** Records the norm computation (no readback). Call after the last backward of a step. */
  compute(): void {
    const e = this.engine;
    for (const c of this.#chunks) {
      e.run(
        SUMSQ,
        { g: c.g, part: this.#part },
        { n4: c.n4, base: c.base, wgs: c.wgs },
        [c.wgs, 1, 1],
      );
    }
    const on = Number.isFinite(this.maxNorm);
    e.run(
      FINISH,
      { part: this.#part, ctl: this.ctl },
      { count4: this.#count4, max_norm: on ? this.maxNorm : 0, clip_on: on ? 1 : 0 },
      [1, 1, 1],
    );
    this.computed = true;
  }

  /** Reads the control block (waits for the GPU: logging only). */
  async read(): Promise<ClipReadout> {
    const u = new Uint32Array(await this.engine.read(this.ctl));
    const f = new Float32Array(u.buffer);
    return {
      norm: f[CTL.total],
      coef: f[CTL.coef],
      skip: u[CTL.skip] !== 0,
      nonFiniteSteps: u[CTL.nonFiniteSteps],
    };
  }

  /** The last computed global gradient norm (before clipping). For logging. */
  async readNorm(): Promise<number> {
    return (await this.read()).norm;
  }

  /** True when some step since the last resetNonFinite() had a NaN/Inf gradient norm (and was skipped). */
  async nonFinite(): Promise<boolean> {
    return (await this.read()).nonFiniteSteps > 0;
  }

  /** Clears the sticky non-finite step count. */
  resetNonFinite(): void {
    this.engine.flush();
    this.engine.device.queue.writeBuffer(
      this.#ctlBuf,
      CTL.nonFiniteSteps * 4,
      new Uint32Array([0]),
    );
  }

  destroy(): void {
    this.engine.flush();
    this.#partBuf.destroy();
    this.#ctlBuf.destroy();
  }
}
