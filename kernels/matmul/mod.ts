/**
 * kernels/matmul/: tiled GEMM (`matmul.ts`: gemm, matmul, linear), the config
 * selection and tuning table (`select.ts`), the tile configs (`tile_config.ts`),
 * its WGSL generator (`codegen.ts`), the tuning cache (`tune.ts`, shipped
 * tables under `tuning/`) and the float64 reference (`reference.ts`).
 */
export * from "./matmul.ts";
export { cacheDir, loadTuningCache, saveTuningCache, tuningPath } from "./tune.ts";
