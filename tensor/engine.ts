/**
 * The engine: kernels, pipelines, and a recorder that puts every dispatch of
 * a step into one compute pass of one command encoder. Uniform parameters go
 * into one arena buffer (256-byte slots, dynamic offsets) written once per
 * submit, so no dispatch needs its own writeBuffer or pass. Nothing waits on
 * the GPU except `read` (and `measure`, used by benchmarks).
 */
import { requestGpu } from "./device.ts";
import { Engine } from "./engine_core.ts";

export * from "./kernel.ts";
export { Engine } from "./engine_core.ts";

let current: Engine | null = null;
let pendingInit: Promise<Engine> | null = null;

/** The process-wide engine (created on first call). */
export function initEngine(opts: { powerPreference?: GPUPowerPreference } = {}): Promise<Engine> {
  if (current) return Promise.resolve(current);
  pendingInit ??= requestGpu(opts).then((gpu) => (current = new Engine(gpu))).finally(() => {
    pendingInit = null;
  });
  return pendingInit;
}

/** The engine created by initEngine(); throws if there is none yet. */
export function engine(): Engine {
  if (!current) throw new Error("engine(): call `await initEngine()` first");
  return current;
}
