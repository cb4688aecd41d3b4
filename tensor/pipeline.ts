/** A kernel's compute pipeline and bind-group layout, built from its WGSL. */
import { type Kernel, SLOT } from "./kernel.ts";
import { compactWorkgroupArrays } from "./wgsl_compact.ts";

/**
 * Builds `k`'s layout (binding 0: the uniform arena slot; then its storage bindings) and
 * pipeline and stores them on `k`; `compact` compiles the source with its workgroup arrays
 * compacted (tensor/wgsl_compact.ts).
 */
export function buildPipeline(device: GPUDevice, k: Kernel, compact: boolean): GPUComputePipeline {
  const entries: GPUBindGroupLayoutEntry[] = [{
    binding: 0,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: SLOT },
  }];
  Object.values(k.spec.bindings).forEach((b, i) => {
    const access = typeof b === "string" ? b : b.access;
    entries.push({
      binding: i + 1,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: access === "rw" ? "storage" : "read-only-storage" },
    });
  });
  const layout = device.createBindGroupLayout({ label: k.spec.name, entries });
  const code = compact ? compactWorkgroupArrays(k.source) : k.source;
  const module = device.createShaderModule({ label: k.spec.name, code });
  k.layout = layout;
  k.compacted = compact;
  k.pipeline = device.createComputePipeline({
    label: k.spec.name,
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: "main" },
  });
  return k.pipeline;
}
