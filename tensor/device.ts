/**
 * WebGPU adapter and device acquisition. Requests the adapter's real limits
 * (so large models can use the full storage-binding and buffer sizes) and the
 * optional features we can use. Deno returns `null` silently when there is no
 * adapter; we turn that into a clear error.
 */
import { BasedError } from "../errors.ts";
import { GL_SOFTWARE_NOTE, isSoftwareGl, selectBackend } from "./backend.ts";

export interface GpuInfo {
  name: string;
  vendor: string;
  architecture: string;
  backend: string;
  /** why that backend: "DENO_WEBGPU_BACKEND", "a Vulkan driver is installed", ... */
  backendWhy: string;
  isFallback: boolean;
  /** a CPU adapter through GL (no Vulkan driver): kernels use configs that compile fast */
  softwareGl: boolean;
  features: string[];
  limits: Record<string, number>;
}

export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  info: GpuInfo;
  hasTimestamps: boolean;
  hasF16: boolean;
}

const WANTED_FEATURES: GPUFeatureName[] = ["timestamp-query", "shader-f16"];

const WANTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindGroups",
  "maxUniformBufferBindingSize",
  "maxDynamicUniformBuffersPerPipelineLayout",
] as const;

/** Returns the environment-selected backend name for messages. */
export function backendName(): string {
  return Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
}

let glNoted = false;

export async function requestGpu(
  opts: { powerPreference?: GPUPowerPreference } = {},
): Promise<Gpu> {
  // before anything touches navigator.gpu: Deno reads the backend when WebGPU first starts
  const choice = selectBackend();
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
    throw new BasedError(
      "WebGPU is not available in this runtime",
      "run with Deno 2.x, which ships navigator.gpu",
    );
  }
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: opts.powerPreference ?? "high-performance",
  });
  if (!adapter && choice.auto) {
    throw new BasedError(
      "no GPU adapter found through the installed Vulkan driver",
      "check it with vulkaninfo, or set DENO_WEBGPU_BACKEND=gl to use OpenGL instead",
    );
  }
  if (!adapter) {
    const install = "install a Vulkan driver (on Debian: apt-get install mesa-vulkan-drivers " +
      "libvulkan1)";
    const set = Deno.env.get("DENO_WEBGPU_BACKEND");
    throw set
      ? new BasedError(
        `no GPU adapter found with DENO_WEBGPU_BACKEND=${set}`,
        `unset DENO_WEBGPU_BACKEND to let based choose, or ${install}`,
      )
      : new BasedError("no GPU adapter found", `${install}; based uses it by itself`);
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of WANTED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") requiredLimits[k] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const limits: Record<string, number> = {};
  for (const k of WANTED_LIMITS) {
    const v = (device.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") limits[k] = v;
  }
  const ai = adapter.info;
  const isFallback = (ai as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  const softwareGl = isSoftwareGl(Deno.build.os, Deno.env.get("DENO_WEBGPU_BACKEND"), isFallback);
  if (softwareGl && !glNoted) {
    glNoted = true;
    console.error(GL_SOFTWARE_NOTE);
  }
  const info: GpuInfo = {
    name: ai.description || ai.device || "unknown adapter",
    vendor: ai.vendor,
    architecture: ai.architecture,
    backend: backendName(),
    backendWhy: choice.why,
    isFallback,
    softwareGl,
    features: [...device.features].sort(),
    limits,
  };
  return {
    adapter,
    device,
    info,
    hasTimestamps: device.features.has("timestamp-query"),
    hasF16: device.features.has("shader-f16"),
  };
}
