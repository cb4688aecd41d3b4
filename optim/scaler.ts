/**
 * Dynamic loss scaling for f16 mixed precision, as torch.cuda.amp.GradScaler
 * (defaults: initial scale 2^16, ×2 after 2000 consecutive clean steps, ×0.5
 * and the step skipped when a gradient is Inf/NaN), entirely on the GPU: no
 * readback inside a step.
 *
 * The state is a few u32 words (kernels/f16/cast.ts `SCALER`): the scale
 * (f32 bits), the growth tracker, the found-inf word (set by the f16 casts of
 * a step when one overflows), the skipped-step total and the skipped steps in
 * a row. The f16 head multiplies the logits gradient by the scale as it
 * rounds it, so every gradient is scaled; `GradClip` with a scaler runs this
 * module's finish kernel instead of its own: it sums the squared (scaled)
 * gradients, takes the step as non-finite when that sum or the found-inf
 * word is, writes the clip control block with the norm unscaled
 * (total = √sumsq / scale) and coef = min(1, max_norm / (total + 1e-6)) /
 * scale (AdamW multiplies the gradients by coef, so it sees unscaled, clipped
 * gradients, or skips on the skip word), then updates the scale as GradScaler
 * does and clears found-inf. The host reads the counters at logging steps.
 */
import { defineKernel, type Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { BUFFER_USAGE } from "../tensor/pool.ts";
import { SCALER } from "../kernels/f16/cast.ts";
import { CTL, NONFINITE_WGSL } from "./clip.ts";

export interface ScalerOptions {
  /** default 2^16 */
  initScale?: number;
  /** default 2 */
  growthFactor?: number;
  /** default 0.5 */
  backoffFactor?: number;
  /** clean steps before the scale grows; default 2000 */
  growthInterval?: number;
}

/** The scaler's state as saved in checkpoints (state.json `scaler`). */
export interface ScalerState {
  scale: number;
  growth_tracker: number;
  skipped_steps: number;
  consecutive_skipped: number;
}

const FINISH_SCALED = defineKernel({
  name: "clip_finish_scaled",
  params: {
    count4: "u32",
    max_norm: "f32",
    clip_on: "u32",
    growth: "f32",
    backoff: "f32",
    interval: "u32",
  },
  bindings: {
    part: { access: "read", type: "array<vec4<u32>>" },
    ctl: { access: "rw", type: "array<u32>" },
    st: { access: "rw", type: "array<u32>" },
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
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { ss[lid] = ss[lid] + ss[lid + s]; sb[lid] = sb[lid] | sb[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let scale = bitcast<f32>(st[${SCALER.scale}]);
    let sumsq = ss[0];
    let flags = sb[0];
    let nf = flags != 0u || nonfinite_bits(bitcast<u32>(sumsq)) || st[${SCALER.foundInf}] != 0u;
    var total = sqrt(sumsq) / scale;
    if (nf) { total = bitcast<f32>(INF_BITS | (flags & 0u)); }
    if ((flags & 1u) != 0u) { total = bitcast<f32>(NAN_BITS | (flags & 0u)); }
    var coef = 1.0;
    if (P.clip_on != 0u && !nf) { coef = min(1.0, P.max_norm / (total + 1e-6)); }
    ctl[${CTL.total}] = bitcast<u32>(total);
    ctl[${CTL.coef}] = bitcast<u32>(coef / scale);
    ctl[${CTL.skip}] = select(0u, 1u, nf);
    ctl[${CTL.nonFiniteSteps}] = ctl[${CTL.nonFiniteSteps}] + select(0u, 1u, nf);
    ctl[${CTL.sumsq}] = bitcast<u32>(sumsq);
    // torch's _amp_update_scale_
    if (nf) {
      st[${SCALER.scale}] = bitcast<u32>(scale * P.backoff);
      st[${SCALER.growth}] = 0u;
      st[${SCALER.skipped}] = st[${SCALER.skipped}] + 1u;
      st[${SCALER.consecutive}] = st[${SCALER.consecutive}] + 1u;
    } else {
      let g = st[${SCALER.growth}] + 1u;
      st[${SCALER.consecutive}] = 0u;
      if (g >= P.interval) {
        let grown = scale * P.growth;
        if (!nonfinite_bits(bitcast<u32>(grown))) { st[${SCALER.scale}] = bitcast<u32>(grown); }
        st[${SCALER.growth}] = 0u;
      } else {
        st[${SCALER.growth}] = g;
      }
    }
    st[${SCALER.foundInf}] = 0u;
  }
}`,
});

export class LossScaler {
  readonly engine: Engine;
  /** the state words (u32 [SCALER.words]) the f16 casts and the finish kernel bind */
  readonly state: Tensor;
  readonly #buf: GPUBuffer;
  readonly initScale: number;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;

  constructor(engine: Engine, opts: ScalerOptions = {}) {
    this.engine = engine;
    this.initScale = opts.initScale ?? 2 ** 16;
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    const ok = (v: number, lo: number, hi: number) => Number.isFinite(v) && v > lo && v < hi;
    if (
      !ok(this.initScale, 0, Infinity) || !ok(this.growthFactor, 1, Infinity) ||
      !ok(this.backoffFactor, 0, 1) || !Number.isInteger(this.growthInterval) ||
      this.growthInterval < 1
    ) {
      throw new BasedError(
        `loss scaler settings out of range: init_scale ${this.initScale} (> 0), growth_factor ` +
          `${this.growthFactor} (> 1), backoff_factor ${this.backoffFactor} (in (0, 1)), ` +
          `growth_interval ${this.growthInterval} (an integer ≥ 1)`,
        "fix train.grad_scaler",
      );
    }
    this.#buf = engine.device.createBuffer({ size: 256, usage: BUFFER_USAGE });
    this.state = engine.wrap(this.#buf, 0, [SCALER.words], "u32");
    this.load({
      scale: this.initScale,
      growth_tracker: 0,
      skipped_steps: 0,
      consecutive_skipped: 0,
    });
  }

  /** Records the finish of GradClip.compute() with unscaling and the scale update (no readback). */
  finish(part: Tensor, count4: number, ctl: Tensor, maxNorm: number): void {
    const on = Number.isFinite(maxNorm);
    this.engine.run(FINISH_SCALED, { part, ctl, st: this.state }, {
      count4,
      max_norm: on ? maxNorm : 0,
      clip_on: on ? 1 : 0,
      growth: this.growthFactor,
      backoff: this.backoffFactor,
      interval: this.growthInterval,
    }, [1, 1, 1]);
  }

  /** Reads the state (waits for the GPU: logging steps and checkpoints only). */
  async read(): Promise<ScalerState> {
    const u = new Uint32Array(await this.engine.read(this.state));
    return {
      scale: new Float32Array(u.buffer)[SCALER.scale],
      growth_tracker: u[SCALER.growth],
      skipped_steps: u[SCALER.skipped],
      consecutive_skipped: u[SCALER.consecutive],
    };
  }

  /** Restores a state from read() (a checkpoint's); validated before anything is written. */
  load(s: ScalerState): void {
    const int = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
    if (
      !s || typeof s.scale !== "number" || !(s.scale > 0) || !Number.isFinite(s.scale) ||
      !int(s.growth_tracker) || !int(s.skipped_steps) || !int(s.consecutive_skipped)
    ) {
      throw new BasedError(`the loss scaler state is invalid: ${JSON.stringify(s)}`);
    }
    const w = new Uint32Array(SCALER.words);
    new Float32Array(w.buffer)[SCALER.scale] = s.scale;
    w[SCALER.growth] = s.growth_tracker;
    w[SCALER.skipped] = s.skipped_steps;
    w[SCALER.consecutive] = s.consecutive_skipped;
    this.engine.flush(); // recorded work that uses the state runs before the write
    this.engine.device.queue.writeBuffer(this.#buf, 0, w);
  }

  destroy(): void {
    this.engine.flush();
    this.#buf.destroy();
  }
}
