/**
 * Based linear attention with the Taylor feature map: three training views,
 * forward and backward, and the recurrent (generation) view.
 *
 *   y_i = (Σ_{j≤i} A_ij v_j) / (Σ_{j≤i} A_ij + ε),  A_ij = 1 + s + s²/2,  s = q_i·k_j/√F
 *
 * Layout: token-major, as the projections produce it: q, k: [B, L, H, F],
 * v, y: [B, L, H, D]. Every accumulator (numerators, denominators, states) is
 * f32; every reduction has a fixed order (bit-reproducible).
 *
 * The views (one file each, one entry each in VIEWS below): quadratic.ts
 * (the quadratic form, tiled), chunked.ts (chunk states + the diagonal tile),
 * cumsum.ts (a per-token scan over the 273-wide φ). recurrent.ts is the
 * generation view, feature_map.ts φ itself, geometry.ts what they share,
 * reference.ts the float64 reference of all of them.
 *
 * All backwards start from the same step: with r_i = 1/(z_i + ε),
 * go_i = gy_i·r_i, gz_i = −(gy_i·y_i)·r_i, the augmented vectors v' = [v | 1],
 * g' = [go | gz] turn the normalised attention into an un-normalised one with
 * D+1 columns.
 */
import { BasedError } from "../../errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { record } from "../../tensor/tape.ts";
import { fill } from "../elementwise.ts";
import { grid1d } from "../wgsl.ts";
import { chunked } from "./chunked.ts";
import { cumsum } from "./cumsum.ts";
import { checkGeometry, type Dims, dims, type Geo, PREP, type View } from "./geometry.ts";
import { quadratic } from "./quadratic.ts";
import { decayedLinearAttention, decayForward, type DecayOptions } from "./decay.ts";
import { decayChunkedForward } from "./decay_chunked.ts";
import { decayChunkedBackward } from "./decay_chunked_bwd.ts";

export { CHUNK } from "./geometry.ts";
export { taylorFeatureMap } from "./feature_map.ts";
export {
  linearAttentionPrefill,
  type LinearAttentionState,
  linearAttentionState,
  linearAttentionStep,
} from "./recurrent.ts";
export type { DecayOptions } from "./decay.ts";
export { headScale } from "./decay_proj.ts";
export { type DecayCursor, decayPrefill, decayStep } from "./decay_recurrent.ts";

/** The training views. A new view is one file and one entry here. */
const VIEWS = { quadratic, chunked, cumsum } satisfies Record<string, View>;

export type LinearAttentionView = keyof typeof VIEWS;

/** Configured names (the reference's `parallel_implementation` values) -> view. */
const VIEW_NAMES: Record<string, LinearAttentionView> = {
  quadratic: "quadratic",
  chunked: "chunked",
  cumsum: "cumsum",
  fla_parallel: "chunked",
  fla_chunk: "chunked",
  linear: "cumsum",
};

/** Maps a configured `parallel_implementation` (or our own view name) to a view. */
export function resolveView(name: string): LinearAttentionView {
  const v = VIEW_NAMES[name];
  if (!v) {
    throw new BasedError(
      `unknown linear-attention view '${name}'`,
      `valid: ${Object.keys(VIEW_NAMES).join(", ")}`,
    );
  }
  return v;
}

/** A view name as the ops take it: resolved already (model/config.ts resolves configured names). */
function checkView(view: LinearAttentionView): LinearAttentionView {
  if (!Object.hasOwn(VIEWS, view)) {
    throw new Error(
      `linearAttention: '${view}' is not a view (${Object.keys(VIEWS).join(", ")}); ` +
        "resolve configured names with resolveView",
    );
  }
  return view;
}

export interface LinearAttentionOptions {
  view: LinearAttentionView;
  /** added to the denominator; default 1e-12 */
  eps?: number;
  /** q/k width; checked against the shapes when given */
  featureDim?: number;
  /**
   * false: the numerator alone, Σ_{j≤i} A_ij v_j (fla's use_normalize=False);
   * default true
   */
  normalize?: boolean;
  /** the paper's fixed decay (decay.ts); off when absent. Quadratic and chunked views. */
  decay?: DecayOptions | null;
}

/** Refuses the decay where no kernel implements it yet (one line, what to do). */
export function checkDecayView(view: LinearAttentionView, normalize = true): void {
  if (view === "cumsum" || !normalize) {
    throw new BasedError(
      `linear attention with fixed_decay: the ${view} view${
        normalize ? "" : " (unnormalised)"
      } does not implement the decay yet`,
      "set parallel_implementation=quadratic or chunked in the linear-attention mixer config",
    );
  }
}

function forward(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  eps: number,
): [Tensor, Tensor] {
  const e = q.engine;
  const y = e.empty([d.B, d.L, d.H, d.D]);
  const den = e.empty([d.B, d.L, d.H]);
  VIEWS[view].forward(d, g, q, k, v, y, den, eps);
  return [y, den];
}

function backward(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  [q, k, v, y, den]: Tensor[],
  gy: Tensor,
  eps: number,
  want: [boolean, boolean, boolean],
): (Tensor | null)[] {
  const e = q.engine;
  const rows = d.B * d.L * d.H;
  const go = e.empty([d.B, d.L, d.H, d.D]);
  const gz = e.empty([d.B, d.L, d.H]);
  e.run(PREP, { gy, y, den, go, gz }, { rows, D: d.D, eps }, grid1d(rows));
  const out = VIEWS[view].backward(d, g, [q, k, v], go, gz, eps, want);
  go.dispose();
  gz.dispose();
  return out;
}

/**
 * Based linear attention, y_i = Σ_{j≤i} A_ij v_j / (Σ_{j≤i} A_ij + ε) per (batch,
 * head), q, k: [B, L, H, F], v: [B, L, H, D] -> y: [B, L, H, D]. Differentiable.
 */
export function linearAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: LinearAttentionOptions,
): Tensor {
  const d = dims(q, k, v, opts.featureDim);
  const g = checkGeometry(d);
  const eps = opts.eps ?? 1e-12;
  const view = checkView(opts.view);
  if (opts.decay) {
    checkDecayView(view, opts.normalize !== false);
    if (view === "chunked") {
      return decayedLinearAttention(
        d,
        g,
        q,
        k,
        v,
        opts.decay,
        eps,
        decayChunkedForward,
        decayChunkedBackward,
      );
    }
    return decayedLinearAttention(d, g, q, k, v, opts.decay, eps);
  }
  if (opts.normalize === false) return numerator(view, d, g, q, k, v);
  const [y, den] = forward(view, d, g, q, k, v, eps);
  record("linear_attention", [q, k, v], [y], [q, k, v, y, den], ([gy], saved) => {
    if (!gy) return [null, null, null];
    return backward(view, d, g, saved, gy, eps, [
      q.requiresGrad,
      k.requiresGrad,
      v.requiresGrad,
    ]);
  }, { packable: [0, 1, 2] }); // q, k, v (y and the normaliser stay f32)
  den.dispose();
  return y;
}

/**
 * The un-normalised numerator through the same kernels: the output kernels
 * without their normalisation, and the normalised backward with r = 1 and
 * gz = 0 (y and den passed as zeros, ε = 1), i.e. go = gy.
 */
function numerator(
  view: LinearAttentionView,
  d: Dims,
  g: Geo,
  q: Tensor,
  k: Tensor,
  v: Tensor,
): Tensor {
  const e = q.engine;
  const num = e.empty([d.B, d.L, d.H, d.D]);
  VIEWS[view].numerator(d, g, q, k, v, num);
  record("linear_attention_numerator", [q, k, v], [num], [q, k, v], ([gy], [qs, ks, vs]) => {
    if (!gy) return [null, null, null];
    const zy = e.empty(gy.shape);
    const zden = e.empty([d.B, d.L, d.H]);
    fill(zy, 0);
    fill(zden, 0);
    const out = backward(view, d, g, [qs, ks, vs, zy, zden], gy, 1, [
      q.requiresGrad,
      k.requiresGrad,
      v.requiresGrad,
    ]);
    zy.dispose();
    zden.dispose();
    return out;
  }, { packable: [0, 1, 2] });
  return num;
}

/**
 * The forward alone, not recorded, also returning the normaliser
 * den_i = Σ_{j≤i} A_ij ([B, L, H], without ε): for parity checks and tools.
 */
export function linearAttentionForward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: LinearAttentionOptions,
): { y: Tensor; den: Tensor } {
  const d = dims(q, k, v, opts.featureDim);
  const g = checkGeometry(d);
  const view = checkView(opts.view);
  if (opts.decay) checkDecayView(view);
  const [y, den] = opts.decay
    ? (view === "chunked" ? decayChunkedForward : decayForward)(
      d,
      g,
      q,
      k,
      v,
      opts.decay,
      opts.eps ?? 1e-12,
    )
    : forward(view, d, g, q, k, v, opts.eps ?? 1e-12);
  return { y, den };
}
