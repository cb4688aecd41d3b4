/**
 * Lab probe: times each WGSL file of a folder written by dev/pipeline_times.ts
 * (BASED_DUMP_WGSL=DIR): create the pipeline and dispatch it once (one
 * workgroup, zero-filled buffers) on this process's backend, printing each
 * time as it finishes.
 *   MESA_SHADER_CACHE_DISABLE=true DENO_WEBGPU_BACKEND=gl deno run -A dev/compile_wgsl.ts DIR [filter]
 */
import { requestGpu } from "../tensor/device.ts";

const [dir, filter] = Deno.args;
const { device } = await requestGpu();
const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
  n.endsWith(".wgsl") && (!filter || n.includes(filter))
).sort();
const slot = device.createBuffer({ size: 256, usage: GPUBufferUsage.UNIFORM });
let sum = 0;
for (const f of files) {
  const code = await Deno.readTextFile(`${dir}/${f}`);
  const n = Number(/_b(\d+)\.wgsl$/.exec(f)![1]);
  const t = performance.now();
  const readOnly = new Set(
    [...code.matchAll(/@binding\((\d+)\)\s*var<storage,\s*read>/g)].map((m) => Number(m[1])),
  );
  const entries: GPUBindGroupLayoutEntry[] = [];
  for (let i = 0; i < n; i++) {
    entries.push({
      binding: i,
      visibility: GPUShaderStage.COMPUTE,
      buffer: i === 0
        ? { type: "uniform", hasDynamicOffset: true, minBindingSize: 256 }
        : { type: readOnly.has(i) ? "read-only-storage" : "storage" },
    });
  }
  const bgl = device.createBindGroupLayout({ entries });
  const p = device.createComputePipeline({
    layout: device.createPipelineLayout({ bindGroupLayouts: [bgl] }),
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
  const created = performance.now() - t;
  const bg: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: slot, size: 256 } }];
  for (let i = 1; i < n; i++) {
    const buffer = device.createBuffer({ size: 1 << 16, usage: GPUBufferUsage.STORAGE });
    bg.push({ binding: i, resource: { buffer } });
  }
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(p);
  pass.setBindGroup(0, device.createBindGroup({ layout: bgl, entries: bg }), [0]);
  pass.dispatchWorkgroups(1);
  pass.end();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  const ms = performance.now() - t;
  sum += ms;
  console.log(`${ms.toFixed(0).padStart(8)} ms  (create ${created.toFixed(0)} ms)  ${f}`);
}
console.log(`${files.length} pipelines, ${(sum / 1000).toFixed(1)} s`);
