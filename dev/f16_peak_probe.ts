/**
 * Lab: which WGSL spelling of f16 arithmetic reaches the packed-f16 (HFMA2) rate? bench/peak.ts
 * measured vec4<f16> fma chains at the fp32 rate on the H200 (66 against 62 TFLOP/s), half the
 * datasheet's packed-f16 peak. This times the same register-chain kernel in several spellings
 * (element type, vector width, fma or multiply then add, chains per thread); every variant does
 * 32 multiply-adds per thread per unrolled step (bench/peak.ts's work), or 64 to test whether more
 * independent chains help, and is checked against the float64 recurrence's fixed point (0.5,
 * exact in f16) before it is timed.
 *
 *   deno run -A dev/f16_peak_probe.ts
 */
import { defineKernel, initEngine } from "../tensor/engine.ts";
import { timeDispatches } from "../bench/peak.ts";

interface Variant {
  el: "f16" | "f32";
  width: 1 | 2 | 4;
  form: "fma" | "muladd";
  chains: number;
}

const WG = 256;
const UNROLL = 8;

function kernel(v: Variant) {
  const ty = v.width === 1 ? v.el : `vec${v.width}<${v.el}>`;
  const init: string[] = [];
  const step: string[] = [];
  for (let c = 0; c < v.chains; c++) {
    init.push(`var x${c} = ${ty}(${v.el}(P.x0) + ${v.el}(${c % 8}) * ${v.el}(P.dx));`);
    step.push(v.form === "fma" ? `x${c} = fma(x${c}, a, b);` : `x${c} = x${c} * a + b;`);
  }
  const sum = Array.from({ length: v.chains }, (_, c) => `x${c}`).join(" + ");
  const total = v.width === 1 ? "f32(s)" : `dot(vec${v.width}<f32>(s), vec${v.width}<f32>(1.0))`;
  return defineKernel({
    name: `probe_peak_${v.el}_w${v.width}_${v.form}_c${v.chains}`,
    f16: v.el === "f16",
    params: { iters: "u32", a: "f32", b: "f32", x0: "f32", dx: "f32" },
    bindings: { out: "rw" },
    code: /* wgsl */ `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let a = ${ty}(${v.el}(P.a));
  let b = ${ty}(${v.el}(P.b));
  ${init.join("\n  ")}
  for (var i = 0u; i < P.iters; i++) {
    ${Array.from({ length: UNROLL }, () => step.join(" ")).join("\n    ")}
  }
  let s = ${sum};
  out[wid.x * ${WG}u + lid] = ${total};
}`,
  });
}

const variants: Variant[] = [
  { el: "f32", width: 4, form: "fma", chains: 8 },
  { el: "f16", width: 4, form: "fma", chains: 8 },
  { el: "f16", width: 4, form: "muladd", chains: 8 },
  { el: "f16", width: 2, form: "fma", chains: 16 },
  { el: "f16", width: 2, form: "muladd", chains: 16 },
  { el: "f16", width: 1, form: "fma", chains: 32 },
  { el: "f32", width: 4, form: "fma", chains: 16 },
  { el: "f16", width: 4, form: "fma", chains: 16 },
  { el: "f16", width: 2, form: "fma", chains: 32 },
];

const e = await initEngine();
const quick = e.info.isFallback;
const workgroups = quick ? 8 : 8192;
const iters = quick ? 4 : 256;
const out = e.empty([workgroups * WG]);
for (const v of variants) {
  if (v.el === "f16" && !e.hasF16) continue;
  const k = kernel(v);
  const ops = v.chains * v.width; // multiply-adds per step
  const call = () =>
    e.run(k, { out }, { iters, a: 0.5, b: 0.25, x0: 0.125, dx: 0.0625 }, [workgroups]);
  call();
  const got = await e.read(out);
  // the fixed point 0.5 per multiply-add lane once converged (iters·UNROLL ≥ 32 steps)
  const want = ops * 0.5;
  const ok = iters * UNROLL < 32 || Math.abs(got[0] - want) <= 1e-3 * want;
  const ms = await timeDispatches(e, call);
  const flops = workgroups * WG * iters * UNROLL * ops * 2;
  console.log(
    `${k.spec.name.padEnd(34)} ${(flops / (ms / 1e3) / 1e12).toFixed(1).padStart(6)} TFLOP/s` +
      `  (${ops} multiply-adds per step${ok ? "" : `; WRONG: ${got[0]} vs ${want}`})`,
  );
}
out.dispose();
