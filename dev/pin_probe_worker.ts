/**
 * One process of the GPU-pinning probe (dev/pin_probe.ts): requests the
 * WebGPU adapter like the trainer does, prints what it got, takes a
 * recognisable amount of GPU memory, keeps the GPU busy for a while, exits.
 *
 *   deno run -A dev/pin_probe_worker.ts --tag T --alloc-mib N --seconds S [--threads N]
 *
 * With BASED_GPU_PIN set, the pin is applied in process first (applyPin, the
 * trainer's path). Lines on stdout: `READY {json}` once the memory is held,
 * `DONE {json}` at the end, or `FAIL {json}`.
 */
import { initEngine } from "../tensor/engine.ts";
import { applyPin } from "../parallel/pin.ts";
import { detectLaunch } from "../parallel/launch.ts";

const SELECTORS = [
  "DENO_WEBGPU_BACKEND",
  "VK_DRIVER_FILES",
  "VK_ICD_FILENAMES",
  "VK_LOADER_LAYERS_ENABLE",
  "VK_ADD_LAYER_PATH",
  "VK_LOADER_DEVICE_SELECT",
  "MESA_VK_DEVICE_SELECT",
  "MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE",
  "DRI_PRIME",
  "CUDA_VISIBLE_DEVICES",
  "CUDA_DEVICE_ORDER",
  "__NV_PRIME_RENDER_OFFLOAD",
  "__VK_LAYER_NV_optimus",
  "BASED_GPU_PIN",
];

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(name);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : def;
}

const tag = arg("--tag", "worker");
const allocMiB = Number(arg("--alloc-mib", "1024"));
const seconds = Number(arg("--seconds", "6"));
const threads = Number(arg("--threads", String(1 << 22)));

function say(kind: string, v: Record<string, unknown>): void {
  console.log(`${kind} ${JSON.stringify({ tag, pid: Deno.pid, ...v })}`);
}

try {
  let pin: string | null = null;
  const strategy = Deno.env.get("BASED_GPU_PIN");
  if (strategy) {
    const r = await applyPin({ strategy, localRank: detectLaunch()?.localRank ?? 0 });
    pin = r.summary;
  }
  const env: Record<string, string> = {};
  for (const k of SELECTORS) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  const e = await initEngine();
  const ai = e.gpu.adapter.info;
  const adapter = {
    vendor: ai.vendor,
    architecture: ai.architecture,
    device: ai.device,
    description: ai.description,
  };
  // a recognisable footprint: allocMiB in buffers of at most 1 GiB (or the adapter's max), cleared
  const max = Math.min(1 << 30, e.limits.maxBufferSize ?? 1 << 28);
  const bufs: GPUBuffer[] = [];
  let left = allocMiB * (1 << 20);
  const enc = e.device.createCommandEncoder();
  while (left > 0) {
    const size = Math.min(max, left);
    const b = e.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    enc.clearBuffer(b);
    bufs.push(b);
    left -= size;
  }
  e.device.queue.submit([enc.finish()]);
  await e.device.queue.onSubmittedWorkDone();
  say("READY", { info: e.info.name, adapter, env, pin, allocMiB });

  // busy loop: an ALU-heavy kernel over the first buffer, for `seconds`
  const module = e.device.createShaderModule({
    code: /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> buf: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var x = f32(id.x) * 1e-6;
  for (var i = 0u; i < 4096u; i = i + 1u) { x = fma(x, 0.999, 0.001); }
  buf[id.x] = x;
}`,
  });
  const pipeline = e.device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const n = Math.min((bufs[0]?.size ?? 0) / 4, threads);
  const bg = e.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: bufs[0], offset: 0, size: n * 4 } }],
  });
  const t0 = performance.now();
  let dispatches = 0;
  while (performance.now() - t0 < seconds * 1000) {
    const c = e.device.createCommandEncoder();
    const p = c.beginComputePass();
    p.setPipeline(pipeline);
    p.setBindGroup(0, bg);
    p.dispatchWorkgroups(Math.min(65535, Math.ceil(n / 256)));
    p.end();
    e.device.queue.submit([c.finish()]);
    await e.device.queue.onSubmittedWorkDone();
    dispatches++;
  }
  say("DONE", { dispatches, ms: Math.round(performance.now() - t0) });
  for (const b of bufs) b.destroy();
  Deno.exit(0);
} catch (err) {
  say("FAIL", { error: String((err as Error)?.message ?? err).split("\n")[0] });
  Deno.exit(1);
}
