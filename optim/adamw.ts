/**
 * AdamW with apex FusedAdam `adam_w_mode=True` semantics (NVIDIA/apex
 * `csrc/multi_tensor_adam.cu`, ADAM_MODE_1), per element, t = step from 1:
 *   g = coef·g                         (coef from GradClip, else 1)
 *   m = β1·m + (1−β1)·g
 *   v = β2·v + (1−β2)·g·g
 *   p = p − lr·((m/bc1) / (√(v/bc2) + eps) + wd·p),  bc1 = 1−β1ᵗ, bc2 = 1−β2ᵗ
 * bc1, bc2 and 1−β are computed on the host in float64 and passed as f32
 * (bc1, bc2, lr as per-dispatch uniforms; β, 1−β, eps and the group's weight
 * decay in a constant 256-byte slot per group); the element math is f32 in
 * apex's operation order.
 *
 * Layout: the moments m and v are flat arenas with exactly the layout of the
 * ParamStore's chunks, so one dispatch per segment (one optimizer group's run
 * inside one chunk) binds the same byte range of p, g, m and v. The kernel
 * reads p, g, m, v and writes p, m, v as vec4 (segments are 64-element
 * aligned), grid-stride with `itemsPerThread` vec4s per thread: 28 bytes of
 * traffic per parameter, bandwidth-bound. Nothing is read back.
 *
 * Non-finite gradients: with a GradClip (`step(lr, {clip})`) every thread
 * first reads the clip's control block and returns when its skip flag is set,
 * so a NaN/Inf gradient norm leaves parameters and moments unchanged (the
 * host step count still advances; the trainer stops at its next logging
 * point on `clip.nonFinite()`). Without a GradClip the kernel only flags
 * non-finite gradient elements (bit test, no extra traffic) in its own status
 * word, read by `nonFinite()`; it cannot skip the update, as that needs the
 * whole gradient inspected before any element is written. Pass a GradClip
 * with maxNorm Infinity for "no clipping, but skip non-finite steps".
 */
import { defineKernel, type Engine, type Kernel } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import type { ParamStore } from "../tensor/params.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { BUFFER_USAGE } from "../tensor/pool.ts";
import { MAX_GRID } from "../kernels/wgsl.ts";
import { CTL, type GradClip, NONFINITE_WGSL } from "./clip.ts";

export interface AdamWHyper {
  lr: number;
  betas: [number, number];
  eps: number;
}

export interface AdamWState {
  /** optimizer steps done */
  step: number;
  /** exp_avg by parameter name */
  m: Map<string, Float32Array>;
  /** exp_avg_sq by parameter name */
  v: Map<string, Float32Array>;
}

export interface AdamWOptions {
  /** vec4s per thread in the grid-stride loop (default 4; tuning knob for the benchmark) */
  itemsPerThread?: number;
}

const kernels = new Map<string, Kernel>();

/**
 * Per-group constants, one 256-byte slot per group (bound at the slot's
 * offset): the per-dispatch uniforms stay within 16 bytes (n4, lr, bc1, bc2).
 */
const HP = { b1: 0, b2: 1, omb1: 2, omb2: 3, eps: 4, wd: 5 } as const;
const HP_SLOT = 64; // f32 words (256 bytes: minStorageBufferOffsetAlignment)

function adamKernel(clip: boolean): Kernel {
  const key = clip ? "clip" : "plain";
  let k = kernels.get(key);
  if (k) return k;
  k = defineKernel({
    name: `adamw_${key}`,
    params: { n4: "u32", lr: "f32", bc1: "f32", bc2: "f32" },
    bindings: {
      g: { access: "read", type: "array<vec4<f32>>" },
      p: { access: "rw", type: "array<vec4<f32>>" },
      m: { access: "rw", type: "array<vec4<f32>>" },
      v: { access: "rw", type: "array<vec4<f32>>" },
      ctl: { access: clip ? "read" : "rw", type: "array<u32>" },
      hp: { access: "read", type: "array<f32>" },
    },
    code: /* wgsl */ `${NONFINITE_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
${
      clip
        ? `  if (ctl[${CTL.skip}] != 0u) { return; } // non-finite gradient norm: skip the update
  let coef = bitcast<f32>(ctl[${CTL.coef}]);`
        : "  var bad = false;"
    }
  let b1 = hp[${HP.b1}];
  let b2 = hp[${HP.b2}];
  let omb1 = hp[${HP.omb1}];
  let omb2 = hp[${HP.omb2}];
  let eps = hp[${HP.eps}];
  let wd = hp[${HP.wd}];
  let stride = nwg.x * nwg.y * 256u;
  var i = (wid.y * nwg.x + wid.x) * 256u + lid;
  loop {
    if (i >= P.n4) { break; }
    ${clip ? "let gr = g[i] * coef;" : "let gr = g[i]; bad = bad || nonfinite4(gr);"}
    let mm = b1 * m[i] + omb1 * gr;
    let vv = b2 * v[i] + omb2 * gr * gr;
    let pp = p[i];
    let denom = sqrt(vv / P.bc2) + eps;
    let upd = (mm / P.bc1) / denom + wd * pp;
    p[i] = pp - P.lr * upd;
    m[i] = mm;
    v[i] = vv;
    i = i + stride;
  }
${clip ? "" : "  if (bad) { ctl[0] = 1u; }"}
}`,
  });
  kernels.set(key, k);
  return k;
}

/** `groups` workgroups as a grid of at most MAX_GRID per dimension, with little excess. */
export function workgroupGrid(groups: number): [number, number, number] {
  const gy = Math.ceil(groups / MAX_GRID);
  return [Math.ceil(groups / gy), gy, 1];
}

interface SegmentBinding {
  group: string;
  n4: number;
  grid: [number, number, number];
  /** the group's constants slot */
  hp: Tensor;
  p: Tensor;
  g: Tensor;
  m: Tensor;
  v: Tensor;
}

export class AdamW {
  readonly engine: Engine;
  /** optimizer steps done (t of the last step); advances on skipped steps too */
  stepCount = 0;
  readonly hp: AdamWHyper;
  readonly itemsPerThread: number;
  /** m (exp_avg) and v (exp_avg_sq) arenas, one buffer per store chunk */
  readonly mBufs: GPUBuffer[] = [];
  readonly vBufs: GPUBuffer[] = [];
  readonly #segs: SegmentBinding[] = [];
  readonly #statusBuf: GPUBuffer;
  readonly #status: Tensor;
  readonly #hpBuf: GPUBuffer;
  #lastClip: GradClip | null = null;

  constructor(
    readonly store: ParamStore,
    readonly groups: Record<string, { weightDecay: number }>,
    hp: AdamWHyper,
    opts: AdamWOptions = {},
  ) {
    const e = this.engine = store.engine;
    const [b1, b2] = hp.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) {
      throw new BasedError(`AdamW betas must be in [0, 1), got [${b1}, ${b2}]`);
    }
    if (!(hp.eps >= 0) || !Number.isFinite(hp.eps)) {
      throw new BasedError(`AdamW eps must be a finite number ≥ 0, got ${hp.eps}`);
    }
    this.hp = { lr: hp.lr, betas: [b1, b2], eps: hp.eps };
    this.itemsPerThread = Math.max(1, Math.floor(opts.itemsPerThread ?? 4));
    for (const [name, g] of Object.entries(groups)) {
      if (!Number.isFinite(g.weightDecay)) {
        throw new BasedError(`AdamW group ${name}: weight decay ${g.weightDecay} is not finite`);
      }
    }
    for (const n of store.chunkSizes) {
      const size = Math.max(256, n * 4);
      // zero-initialised by WebGPU: the moments start at 0
      this.mBufs.push(e.device.createBuffer({ size, usage: BUFFER_USAGE }));
      this.vBufs.push(e.device.createBuffer({ size, usage: BUFFER_USAGE }));
    }
    // constants per group, written once (before any step is recorded)
    const groupNames = Object.keys(groups);
    this.#hpBuf = e.device.createBuffer({
      size: Math.max(1, groupNames.length) * HP_SLOT * 4,
      usage: BUFFER_USAGE,
    });
    const hpHost = new Float32Array(Math.max(1, groupNames.length) * HP_SLOT);
    groupNames.forEach((name, gi) => {
      const o = gi * HP_SLOT;
      hpHost[o + HP.b1] = b1;
      hpHost[o + HP.b2] = b2;
      hpHost[o + HP.omb1] = 1 - b1; // float64 on the host, then rounded once
      hpHost[o + HP.omb2] = 1 - b2;
      hpHost[o + HP.eps] = hp.eps;
      hpHost[o + HP.wd] = groups[name].weightDecay;
    });
    e.device.queue.writeBuffer(this.#hpBuf, 0, hpHost);
    for (const s of store.segments) {
      const grp = groups[s.group];
      if (!grp) {
        throw new BasedError(
          `AdamW: parameters of group '${s.group}' have no optimizer settings ` +
            `(groups given: ${Object.keys(groups).join(", ") || "none"})`,
        );
      }
      if (s.start % 4 || s.length % 4) {
        throw new Error(`AdamW: segment [${s.start}, +${s.length}) is not vec4-aligned`);
      }
      const off = s.start * 4;
      this.#segs.push({
        group: s.group,
        n4: s.length / 4,
        grid: workgroupGrid(Math.max(1, Math.ceil(s.length / 4 / (256 * this.itemsPerThread)))),
        hp: e.wrap(this.#hpBuf, groupNames.indexOf(s.group) * HP_SLOT * 4, [HP_SLOT]),
        p: e.wrap(store.values[s.chunk], off, [s.length]),
        g: e.wrap(store.grads[s.chunk], off, [s.length]),
        m: e.wrap(this.mBufs[s.chunk], off, [s.length]),
        v: e.wrap(this.vBufs[s.chunk], off, [s.length]),
      });
    }
    this.#statusBuf = e.device.createBuffer({ size: 256, usage: BUFFER_USAGE });
    this.#status = e.wrap(this.#statusBuf, 0, [4], "u32");
  }

  /** Number of dispatches one step records (one per segment). */
  get dispatchesPerStep(): number {
    return this.#segs.length;
  }

  /**
   * Records one optimizer step at learning rate `lr` (no readback). With
   * `clip`, its compute() must have been recorded since the previous step.
   */
  step(lr: number, opts: { clip?: GradClip } = {}): void {
    if (!Number.isFinite(lr) || lr < 0) {
      throw new BasedError(`AdamW: learning rate ${lr} is not a finite number ≥ 0`);
    }
    const clip = opts.clip;
    if (clip) {
      if (clip.store !== this.store) {
        throw new Error("AdamW.step: the GradClip is for another store");
      }
      if (!clip.computed) {
        throw new Error("AdamW.step: call clip.compute() after the backward and before step()");
      }
      clip.computed = false;
      this.#lastClip = clip;
    }
    const t = ++this.stepCount;
    const [b1, b2] = this.hp.betas;
    // host float64, as apex computes them in Python
    const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
    const k = adamKernel(!!clip);
    const ctl = clip ? clip.ctl : this.#status;
    for (const s of this.#segs) {
      this.engine.run(
        k,
        { g: s.g, p: s.p, m: s.m, v: s.v, ctl, hp: s.hp },
        { n4: s.n4, lr, bc1, bc2 },
        s.grid,
      );
    }
  }

  /**
   * True when a non-finite gradient was seen: by the GradClip last passed to
   * step() (those steps were skipped), or, for steps without a clip, by the
   * kernel's element test (those updates were applied). Waits for the GPU.
   */
  async nonFinite(): Promise<boolean> {
    const own = (await this.engine.read(this.#status))[0] !== 0;
    return own || (this.#lastClip ? await this.#lastClip.nonFinite() : false);
  }

  /** Clears the flag of steps without a clip (the clip has its own resetNonFinite). */
  resetNonFinite(): void {
    this.engine.flush();
    this.engine.device.queue.writeBuffer(this.#statusBuf, 0, new Uint32Array(4));
  }

  /** Reads the moments to the host, by parameter name (checkpoints). */
  async state(): Promise<AdamWState> {
    const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
    for (let c = 0; c < this.mBufs.length; c++) {
      const n = this.store.chunkSizes[c];
      const mc = await this.engine.readF32(this.engine.wrap(this.mBufs[c], 0, [n]));
      const vc = await this.engine.readF32(this.engine.wrap(this.vBufs[c], 0, [n]));
      for (const p of this.store.params) {
        if (p.chunk !== c) continue;
        m.set(p.name, mc.slice(p.offset, p.offset + p.size));
        v.set(p.name, vc.slice(p.offset, p.offset + p.size));
      }
    }
    return { step: this.stepCount, m, v };
  }

  /**
   * Restores the moments and step count: from a state() result, or from
   * checkpoint tensors named `exp_avg.<name>` / `exp_avg_sq.<name>` plus
   * `meta.step`. Every parameter must be present.
   */
  loadState(s: AdamWState | Map<string, Float32Array>, meta?: { step: number }): void {
    let step: number, getM: (n: string) => Float32Array | undefined;
    let getV: (n: string) => Float32Array | undefined;
    if (s instanceof Map) {
      if (!meta || !Number.isInteger(meta.step) || meta.step < 0) {
        throw new BasedError(
          `AdamW.loadState: the optimizer step count is missing or invalid (${
            JSON.stringify(meta)
          })`,
        );
      }
      step = meta.step;
      getM = (n) => s.get(`exp_avg.${n}`);
      getV = (n) => s.get(`exp_avg_sq.${n}`);
    } else {
      step = s.step;
      getM = (n) => s.m.get(n);
      getV = (n) => s.v.get(n);
    }
    if (!Number.isInteger(step) || step < 0) {
      throw new BasedError(`AdamW.loadState: invalid step count ${step}`);
    }
    // validate everything before writing anything
    const writes: [GPUBuffer, number, Float32Array][] = [];
    for (const p of this.store.params) {
      for (
        const [what, get, bufs] of [["exp_avg", getM, this.mBufs], [
          "exp_avg_sq",
          getV,
          this.vBufs,
        ]] as const
      ) {
        const a = get(p.name);
        if (!a) throw new BasedError(`optimizer state: no ${what} for parameter ${p.name}`);
        if (a.length !== p.size) {
          throw new BasedError(
            `optimizer state: ${what} of ${p.name} has ${a.length} values, expected ${p.size}`,
          );
        }
        writes.push([bufs[p.chunk], p.offset * 4, a]);
      }
    }
    this.engine.flush(); // recorded work that uses the moments runs before the writes
    for (const [buf, off, a] of writes) {
      this.engine.device.queue.writeBuffer(buf, off, a as Float32Array<ArrayBuffer>);
    }
    this.stepCount = step;
  }

  destroy(): void {
    this.engine.flush();
    for (const b of [...this.mBufs, ...this.vBufs, this.#statusBuf, this.#hpBuf]) b.destroy();
  }
}
