/**
 * The arithmetic peak a WGSL kernel reaches on this adapter: every thread
 * runs independent chains of multiply-adds on registers, x ← fma(x, a, b),
 * with a and b uniforms (nothing for the compiler to fold), and writes the
 * sum of its chains once. fp32: vec4<f32> chains (four FFMA each); packed
 * f16: vec4<f16> chains (two HFMA2 each). This is the limit of the GEMMs'
 * class as the driver compiles our WGSL, beside the datasheet's.
 *
 * With a = 0.5, b = 0.25 every chain converges to 0.5 (exact in f32 and f16:
 * no overflow, no subnormals); the test checks the outputs against the
 * float64 recurrence.
 */
import { defineKernel, type Engine, type Kernel } from "../tensor/engine.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { median } from "./report.ts";

/** Independent vec4 chains per thread and their unrolled steps per loop iteration. */
export const PEAK_CHAINS = 8;
export const PEAK_UNROLL = 8;
const WG = 256;

function peakKernel(el: "f32" | "f16"): Kernel {
  const v = `vec4<${el}>`;
  const init: string[] = [];
  const step: string[] = [];
  for (let c = 0; c < PEAK_CHAINS; c++) {
    init.push(`var x${c} = ${v}(${el}(P.x0) + ${el}(${c}) * ${el}(P.dx));`);
    step.push(`x${c} = fma(x${c}, a, b);`);
  }
  const body = Array.from({ length: PEAK_UNROLL }, () => step.join(" ")).join("\n    ");
  const sum = Array.from({ length: PEAK_CHAINS }, (_, c) => `x${c}`).join(" + ");
  return defineKernel({
    name: `bench_fma_peak_${el}`,
    f16: el === "f16",
    params: { iters: "u32", a: "f32", b: "f32", x0: "f32", dx: "f32" },
    bindings: { out: "rw" },
    code: /* wgsl */ `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let a = ${v}(${el}(P.a));
  let b = ${v}(${el}(P.b));
  ${init.join("\n  ")}
  for (var i = 0u; i < P.iters; i++) {
    ${body}
  }
  let s = vec4<f32>(${sum});
  out[wid.x * ${WG}u + lid] = s.x + s.y + s.z + s.w;
}`,
  });
}

const KERNELS: Partial<Record<"f32" | "f16", Kernel>> = {};

/** Floating-point operations of one dispatch: 2 per multiply-add. */
export function peakFlops(workgroups: number, iters: number): number {
  return workgroups * WG * iters * PEAK_UNROLL * PEAK_CHAINS * 4 * 2;
}

/** Runs the peak kernel once (no timing): `out` gets one value per thread. */
export function runPeak(
  e: Engine,
  el: "f32" | "f16",
  out: Tensor,
  p: { workgroups: number; iters: number; a: number; b: number; x0: number; dx: number },
): void {
  const k = KERNELS[el] ??= peakKernel(el);
  e.run(k, { out }, { iters: p.iters, a: p.a, b: p.b, x0: p.x0, dx: p.dx }, [p.workgroups]);
}

/**
 * GPU ms of one `call` (its dispatches): a first call (compiles), ~100 ms of calls to bring the
 * clocks up, then the median of 5 timed batches of ~20 ms.
 */
export async function timeDispatches(e: Engine, call: () => void): Promise<number> {
  const one = await e.measure(call);
  const inner = Math.max(1, Math.min(50, Math.ceil(20 / Math.max(one, 1e-3))));
  for (let i = 0; i < Math.min(500, Math.ceil(100 / Math.max(one, 1e-3))); i++) call();
  const ts: number[] = [];
  for (let r = 0; r < 5; r++) {
    ts.push(
      (await e.measure(() => {
        for (let i = 0; i < inner; i++) call();
      })) / inner,
    );
  }
  return median(ts);
}

export interface PeakResult {
  precision: "f32" | "f16";
  workgroups: number;
  iters: number;
  ms: number;
  tflops: number;
}

/** Times the fp32 and (with shader-f16) packed-f16 peak kernels; medians of timestamp queries. */
export async function benchPeak(e: Engine, opts: { quick?: boolean } = {}): Promise<PeakResult[]> {
  const workgroups = opts.quick ? 64 : 16384;
  const iters = opts.quick ? 64 : 512;
  const out = e.empty([workgroups * WG]);
  const rows: PeakResult[] = [];
  for (const el of e.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
    const p = { workgroups, iters, a: 0.5, b: 0.25, x0: 0.125, dx: 0.0625 };
    const ms = await timeDispatches(e, () => runPeak(e, el, out, p));
    rows.push({
      precision: el,
      workgroups,
      iters,
      ms,
      tflops: peakFlops(workgroups, iters) / (ms / 1e3) / 1e12,
    });
  }
  out.dispose();
  return rows;
}
