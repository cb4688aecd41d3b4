/** Kernel specs: bindings, params, the WGSL header, defineKernel, Grid, the uniform slot size. */

export type Access = "read" | "rw";
export type ParamType = "u32" | "i32" | "f32";

export interface BindingSpec {
  access: Access;
  /** WGSL type of the binding, default `array<f32>` */
  type?: string;
}

export interface KernelSpec {
  /** unique name (pipelines are cached by name + code) */
  name: string;
  /** uniform parameters, in order; available in WGSL as `P.<name>` */
  params?: Record<string, ParamType>;
  /** storage bindings in order, available in WGSL by these names */
  bindings: Record<string, Access | BindingSpec>;
  /** WGSL: helper functions and the `@compute` entry point `main` */
  code: string;
  /** needs `enable f16;` */
  f16?: boolean;
}

export const SLOT = 256;
export const ARENA_SLOTS = 4096;

export interface Kernel {
  readonly id: number;
  readonly spec: KernelSpec;
  readonly source: string;
  readonly paramNames: string[];
  readonly paramTypes: ParamType[];
  readonly bindingNames: string[];
  pipeline?: GPUComputePipeline;
  layout?: GPUBindGroupLayout;
  /** whether `pipeline` was built with compacted workgroup arrays (tensor/pipeline.ts) */
  compacted?: boolean;
}

let nextKernelId = 1;

/** The WGSL header the engine prepends: the Params struct and all bindings. */
export function kernelHeader(spec: KernelSpec): string {
  const lines: string[] = [];
  if (spec.f16) lines.push("enable f16;");
  const params = Object.entries(spec.params ?? {});
  if (params.length === 0) params.push(["_unused", "u32"]);
  lines.push(`struct Params { ${params.map(([n, t]) => `${n}: ${t},`).join(" ")} }`);
  lines.push("@group(0) @binding(0) var<uniform> P: Params;");
  Object.entries(spec.bindings).forEach(([name, b], i) => {
    const bs: BindingSpec = typeof b === "string" ? { access: b } : b;
    const acc = bs.access === "rw" ? "read_write" : "read";
    lines.push(
      `@group(0) @binding(${i + 1}) var<storage, ${acc}> ${name}: ${bs.type ?? "array<f32>"};`,
    );
  });
  return lines.join("\n") + "\n";
}

export function defineKernel(spec: KernelSpec): Kernel {
  const params = Object.entries(spec.params ?? {});
  if (params.length > SLOT / 4) throw new Error(`kernel ${spec.name}: too many params`);
  return {
    id: nextKernelId++,
    spec,
    source: kernelHeader(spec) + spec.code,
    paramNames: params.map(([n]) => n),
    paramTypes: params.map(([, t]) => t),
    bindingNames: Object.keys(spec.bindings),
  };
}

export type Grid = [number, number?, number?];
