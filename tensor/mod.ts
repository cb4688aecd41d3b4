export { BasedError, formatBytes } from "../errors.ts";
export { backendName, type Gpu, type GpuInfo, requestGpu } from "./device.ts";
export { BufferPool, type PoolStats, sizeClass } from "./pool.ts";
export {
  type DType,
  keep,
  resolveShape,
  shapeSize,
  shapeStr,
  Storage,
  Tensor,
  tidy,
} from "./tensor.ts";
export {
  defineKernel,
  Engine,
  engine,
  type Grid,
  initEngine,
  type Kernel,
  type KernelSpec,
} from "./engine.ts";
export {
  ACCUMULATED,
  backward,
  type BackwardFn,
  clearTape,
  type GradOut,
  isGradEnabled,
  leafGrad,
  noGrad,
  record,
  tapeLength,
} from "./tape.ts";
export { type Param, type ParamSpec, ParamStore, type Segment } from "./params.ts";
export * from "./safetensors.ts";
