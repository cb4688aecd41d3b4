/**
 * Lab probe: the compile time of every compute pipeline a training step uses.
 *   MESA_SHADER_CACHE_DISABLE=true deno run -A dev/pipeline_times.ts [overrides...]
 * (defaults: experiment=example/based-tiny, 1 step). Force GL with
 * DENO_WEBGPU_BACKEND=gl. Phase 1 trains and records each pipeline's WGSL and
 * bind-group layout; phase 2 builds each one again from its WGSL and dispatches
 * it once (one workgroup, zero-filled buffers and parameters) alone, timing
 * creation + first dispatch: Mesa's llvmpipe (under both lavapipe and GL)
 * compiles a shader when it is first dispatched, not when it is created.
 * With BASED_DUMP_WGSL=DIR each pipeline's WGSL is written to DIR (for
 * dev/compile_wgsl.ts, which times them one by one on another backend).
 */
import { loadConfig } from "../cli/options.ts";
import { train } from "../train/loop.ts";

type Rec = { label: string; code: string; bgl: GPUBindGroupLayout; entries: number };
const codeOf = new Map<GPUShaderModule, string>();
const bglOf = new Map<GPUPipelineLayout, GPUBindGroupLayout>();
const nEntries = new Map<GPUBindGroupLayout, number>();
const recs: Rec[] = [];
let device: GPUDevice | null = null;
const P = (globalThis as unknown as { GPUDevice: { prototype: GPUDevice } }).GPUDevice.prototype;
const { createShaderModule, createPipelineLayout, createBindGroupLayout, createComputePipeline } =
  P;
P.createShaderModule = function (this: GPUDevice, d) {
  const m = createShaderModule.call(this, d);
  codeOf.set(m, d.code);
  return m;
};
P.createBindGroupLayout = function (this: GPUDevice, d) {
  const l = createBindGroupLayout.call(this, d);
  nEntries.set(l, [...d.entries].length);
  return l;
};
P.createPipelineLayout = function (this: GPUDevice, d) {
  const l = createPipelineLayout.call(this, d);
  bglOf.set(l, [...d.bindGroupLayouts][0] as GPUBindGroupLayout);
  return l;
};
const dump = Deno.env.get("BASED_DUMP_WGSL");
if (dump) Deno.mkdirSync(dump, { recursive: true });
P.createComputePipeline = function (this: GPUDevice, d) {
  device = this;
  const bgl = bglOf.get(d.layout as GPUPipelineLayout)!;
  const r = {
    label: d.label ?? "?",
    code: codeOf.get(d.compute.module)!,
    bgl,
    entries: nEntries.get(bgl)!,
  };
  // written as each pipeline is created (before it compiles, at its first dispatch)
  const name = `${String(recs.length).padStart(3, "0")}_${r.label}_b${r.entries}.wgsl`;
  if (dump) Deno.writeTextFileSync(`${dump}/${name}`, r.code);
  recs.push(r);
  return createComputePipeline.call(this, d);
};

const args = Deno.args.length
  ? Deno.args
  : ["experiment=example/based-tiny", "trainer.max_steps=1", "train.scheduler.warmup_t=0"];
const cfg = await loadConfig([
  ...args,
  "do_test=false",
  "hydra.run.dir=/tmp/based-pipeline-times",
  "callbacks.model_checkpoint.dirpath=/tmp/based-pipeline-times/ck",
]);
const t0 = performance.now();
await train(cfg);
const total = performance.now() - t0;

const dev = device as unknown as GPUDevice;
const slot = dev.createBuffer({ size: 256, usage: GPUBufferUsage.UNIFORM });
const store = () => dev.createBuffer({ size: 1 << 16, usage: GPUBufferUsage.STORAGE });
const out: { label: string; ms: number }[] = [];
for (const r of recs) {
  const t = performance.now();
  const p = createComputePipeline.call(dev, {
    layout: createPipelineLayout.call(dev, { bindGroupLayouts: [r.bgl] }),
    compute: { module: createShaderModule.call(dev, { code: r.code }), entryPoint: "main" },
  });
  const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: slot, size: 256 } }];
  for (let i = 1; i < r.entries; i++) entries.push({ binding: i, resource: { buffer: store() } });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(p);
  pass.setBindGroup(0, dev.createBindGroup({ layout: r.bgl, entries }), [0]);
  pass.dispatchWorkgroups(1);
  pass.end();
  dev.queue.submit([enc.finish()]);
  await dev.queue.onSubmittedWorkDone();
  out.push({ label: r.label, ms: performance.now() - t });
}
out.sort((a, b) => b.ms - a.ms);
const sum = out.reduce((s, t) => s + t.ms, 0);
console.log(
  `\n${out.length} pipelines: ${(sum / 1000).toFixed(1)} s to compile and dispatch each once ` +
    `(training took ${(total / 1000).toFixed(1)} s; backend ` +
    `${Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default"})`,
);
for (const t of out) console.log(`${t.ms.toFixed(0).padStart(8)} ms  ${t.label}`);
