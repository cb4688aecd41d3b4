/**
 * GPU pinning: give each process of a host a different GPU.
 *
 * Deno's WebGPU hands every process the first adapter wgpu finds, and honours
 * only DENO_WEBGPU_BACKEND (not WGPU_ADAPTER_NAME), so with two GPUs two ranks
 * would share GPU 0. What can still steer it is the environment that the
 * Vulkan loader, its layers and the driver read when the Vulkan instance is
 * created, which Deno does lazily at the first `navigator.gpu.requestAdapter()`
 * (checked on lavapipe: a VK_DRIVER_FILES set with Deno.env.set before the
 * request takes effect). A strategy maps a GPU slot (picked by the local rank)
 * to such variables:
 *
 * - `dri-prime`: Mesa's device-select layer (Debian mesa-vulkan-drivers),
 *   forced on with VK_LOADER_LAYERS_ENABLE=*MESA_device_select*, told the PCI
 *   slot by DRI_PRIME=pci-DDDD_BB_DD_F and to expose only that device by
 *   MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1. The one candidate that can
 *   tell two identical GPUs apart (needs VK_EXT_pci_bus_info, which NVIDIA has).
 * - `mesa-vid-did`: the same layer with MESA_VK_DEVICE_SELECT=vendor:device
 *   (cannot tell identical GPUs apart: both H200s are 10de:2335).
 * - `loader-vid-did`: the Khronos loader's VK_LOADER_DEVICE_SELECT=vendor:device
 *   (newer loaders only; reorders, same limitation).
 * - `cuda-visible`: CUDA_VISIBLE_DEVICES=<uuid or index> (+ CUDA_DEVICE_ORDER=PCI_BUS_ID);
 *   whether NVIDIA's Vulkan driver honours it is what the probe finds out.
 * - `nv-prime`: __NV_PRIME_RENDER_OFFLOAD=1, __VK_LAYER_NV_optimus=NVIDIA_only
 *   plus CUDA_VISIBLE_DEVICES (PRIME offload is a laptop mechanism; probed for
 *   completeness).
 * - `none`: nothing.
 *
 * The GPUs come from BASED_GPU_PIN_DEVICES (comma-separated PCI bus ids, each
 * optionally `@vendor:device`, e.g. `0000:19:00.0@10de:2335`) or from
 * `nvidia-smi`. Slot = localRank mod #GPUs.
 *
 * Two ways to apply it:
 * - in process: BASED_GPU_PIN=<strategy> makes DataParallel.init call
 *   applyPin() (Deno.env.set) before the engine requests its adapter;
 * - re-exec wrapper, for variables read earlier than that (or a runtime that
 *   reads them at start-up):
 *   `mpirun -np 2 deno run -A parallel/pin.ts --strategy dri-prime -- ./based train ...`
 *   starts the command with the rank's variables set (local rank from
 *   OMPI_COMM_WORLD_LOCAL_RANK etc.) and exits with its status.
 *   `--print` only prints the variables.
 * dev/pin_probe.sh (lab code, not part of the product) tries every strategy on
 * a machine with several GPUs.
 */
import { BasedError } from "../errors.ts";
import { detectLaunch, type Env } from "./launch.ts";

export const STRATEGIES = [
  "none",
  "dri-prime",
  "mesa-vid-did",
  "loader-vid-did",
  "cuda-visible",
  "nv-prime",
] as const;
export type PinStrategy = (typeof STRATEGIES)[number];

/** One GPU of the host. */
export interface GpuSlot {
  /** nvidia-smi's index (PCI order) or the position in BASED_GPU_PIN_DEVICES */
  index: number;
  /** PCI bus id, e.g. "00000000:19:00.0" (nvidia-smi) or "0000:19:00.0" */
  busId: string;
  /** "vendor:device" in hex, e.g. "10de:2335" */
  pciId?: string;
  uuid?: string;
  name?: string;
}

export function isStrategy(s: string): s is PinStrategy {
  return (STRATEGIES as readonly string[]).includes(s);
}

/** Parses a PCI bus id "[domain:]bus:device.function" (hex). */
export function parseBusId(
  busId: string,
): { domain: number; bus: number; dev: number; fn: number } {
  const m = /^(?:([0-9a-fA-F]+):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(
    busId.trim(),
  );
  if (!m) throw new BasedError(`not a PCI bus id: ${JSON.stringify(busId)}`, "e.g. 0000:19:00.0");
  return {
    domain: parseInt(m[1] ?? "0", 16),
    bus: parseInt(m[2], 16),
    dev: parseInt(m[3], 16),
    fn: parseInt(m[4], 16),
  };
}

/** Mesa's DRI_PRIME tag of a PCI slot: "pci-DDDD_BB_DD_F" (device_select_layer.c). */
export function driPrimeTag(busId: string): string {
  const b = parseBusId(busId);
  const h = (v: number, w: number) => v.toString(16).padStart(w, "0");
  return `pci-${h(b.domain & 0xffff, 4)}_${h(b.bus, 2)}_${h(b.dev, 2)}_${b.fn}`;
}

/** nvidia-smi's pci.device_id ("0x233510DE": device << 16 | vendor) as "10de:2335". */
export function pciIdFromNvidia(v: string): string | undefined {
  const n = parseInt(v.trim(), 16);
  if (!Number.isFinite(n) || n <= 0) return undefined;
  const vendor = n & 0xffff, device = (n >>> 16) & 0xffff;
  return `${vendor.toString(16).padStart(4, "0")}:${device.toString(16).padStart(4, "0")}`;
}

/** Parses `nvidia-smi --query-gpu=index,pci.bus_id,pci.device_id,uuid,name --format=csv,noheader`. */
export function parseNvidiaSmi(csv: string): GpuSlot[] {
  const out: GpuSlot[] = [];
  for (const line of csv.split("\n")) {
    if (!line.trim()) continue;
    const [index, busId, devId, uuid, ...name] = line.split(",").map((s) => s.trim());
    if (!/^\d+$/.test(index ?? "")) continue;
    out.push({
      index: Number(index),
      busId,
      pciId: devId ? pciIdFromNvidia(devId) : undefined,
      uuid: uuid || undefined,
      name: name.join(",") || undefined,
    });
  }
  return out;
}

/** Parses BASED_GPU_PIN_DEVICES: "busid[@vid:did],…". */
export function parseDeviceList(s: string): GpuSlot[] {
  return s.split(",").map((x) => x.trim()).filter(Boolean).map((x, index) => {
    const [busId, pciId] = x.split("@");
    parseBusId(busId);
    if (pciId !== undefined && !/^[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}$/.test(pciId)) {
      throw new BasedError(`BASED_GPU_PIN_DEVICES: ${JSON.stringify(pciId)} is not vendor:device`);
    }
    return { index, busId, pciId: pciId?.toLowerCase() };
  });
}

/** The host's GPUs: BASED_GPU_PIN_DEVICES, else nvidia-smi (PCI order). */
export async function listGpus(env: Env = Deno.env.toObject()): Promise<GpuSlot[]> {
  if (env.BASED_GPU_PIN_DEVICES) return parseDeviceList(env.BASED_GPU_PIN_DEVICES);
  let text: string;
  try {
    const r = await new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=index,pci.bus_id,pci.device_id,uuid,name", "--format=csv,noheader"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr).split("\n")[0]);
    text = new TextDecoder().decode(r.stdout);
  } catch (e) {
    throw new BasedError(
      `GPU pinning: cannot list the GPUs with nvidia-smi (${(e as Error).message})`,
      "set BASED_GPU_PIN_DEVICES=<pci bus id>,<pci bus id>,…",
    );
  }
  const gpus = parseNvidiaSmi(text);
  if (!gpus.length) throw new BasedError("GPU pinning: nvidia-smi lists no GPU");
  return gpus;
}

function appendList(old: string | undefined, item: string): string {
  if (!old) return item;
  return old.split(",").includes(item) ? old : `${old},${item}`;
}

/** The variables `strategy` sets for GPU `slot` (`env`: the current environment, for lists). */
export function pinEnv(
  strategy: PinStrategy,
  slot: GpuSlot,
  env: Env = {},
): Record<string, string> {
  const layer = "*MESA_device_select*";
  const cuda = {
    CUDA_VISIBLE_DEVICES: slot.uuid ?? String(slot.index),
    CUDA_DEVICE_ORDER: "PCI_BUS_ID",
  };
  const vidDid = () => {
    if (!slot.pciId) {
      throw new BasedError(
        `GPU pinning ${strategy}: the vendor:device id of ${slot.busId} is unknown`,
      );
    }
    return slot.pciId;
  };
  switch (strategy) {
    case "none":
      return {};
    case "dri-prime":
      return {
        VK_LOADER_LAYERS_ENABLE: appendList(env.VK_LOADER_LAYERS_ENABLE, layer),
        DRI_PRIME: driPrimeTag(slot.busId),
        MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
      };
    case "mesa-vid-did":
      return {
        VK_LOADER_LAYERS_ENABLE: appendList(env.VK_LOADER_LAYERS_ENABLE, layer),
        MESA_VK_DEVICE_SELECT: vidDid(),
        MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
      };
    case "loader-vid-did":
      return { VK_LOADER_DEVICE_SELECT: vidDid() };
    case "cuda-visible":
      return cuda;
    case "nv-prime":
      return { __NV_PRIME_RENDER_OFFLOAD: "1", __VK_LAYER_NV_optimus: "NVIDIA_only", ...cuda };
  }
}

export interface PinResult {
  strategy: PinStrategy;
  slot: GpuSlot | null;
  vars: Record<string, string>;
  /** one line for the log */
  summary: string;
}

/** Works out the variables of `localRank` under `strategy` (nothing is set). */
export async function planPin(
  o: { strategy: string; localRank: number; env?: Env },
): Promise<PinResult> {
  const env = o.env ?? Deno.env.toObject();
  if (!isStrategy(o.strategy)) {
    throw new BasedError(
      `BASED_GPU_PIN=${o.strategy} is not a pinning strategy`,
      `use one of ${STRATEGIES.join(", ")}`,
    );
  }
  if (o.strategy === "none") {
    return { strategy: "none", slot: null, vars: {}, summary: "none" };
  }
  const gpus = await listGpus(env);
  const slot = gpus[o.localRank % gpus.length];
  const vars = pinEnv(o.strategy, slot, env);
  const kv = Object.entries(vars).map(([k, v]) => `${k}=${v}`).join(" ");
  return {
    strategy: o.strategy,
    slot,
    vars,
    summary: `${o.strategy}: local rank ${o.localRank} -> GPU ${slot.index} (${slot.busId}); ${kv}`,
  };
}

/**
 * Sets the variables in this process (Deno.env.set). Must run before the
 * first WebGPU adapter request of the process (the Vulkan instance reads them
 * once, when it is created).
 */
export async function applyPin(
  o: { strategy: string; localRank: number; env?: Env },
): Promise<PinResult> {
  const r = await planPin(o);
  for (const [k, v] of Object.entries(r.vars)) Deno.env.set(k, v);
  return r;
}

// ------------------------------------------------------------------ the re-exec wrapper

const USAGE = "usage: deno run -A parallel/pin.ts [--strategy S] [--local-rank N] " +
  "(--print | -- command args...)";

async function main(args: string[]): Promise<number> {
  const env = Deno.env.toObject();
  let strategy = env.BASED_GPU_PIN ?? "";
  let localRank = detectLaunch(env)?.localRank ?? 0;
  let print = false;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      i++;
      break;
    } else if (a === "--strategy") strategy = args[++i] ?? "";
    else if (a === "--local-rank") localRank = Number(args[++i]);
    else if (a === "--print") print = true;
    else throw new BasedError(`pin.ts: unknown argument ${a}`, USAGE);
  }
  if (!strategy) throw new BasedError("pin.ts: no strategy (--strategy or BASED_GPU_PIN)", USAGE);
  if (!Number.isInteger(localRank) || localRank < 0) {
    throw new BasedError(`pin.ts: bad local rank ${localRank}`, USAGE);
  }
  const r = await planPin({ strategy, localRank, env });
  if (print) {
    for (const [k, v] of Object.entries(r.vars)) console.log(`${k}=${v}`);
    return 0;
  }
  const cmd = args.slice(i);
  if (!cmd.length) throw new BasedError("pin.ts: no command to run", USAGE);
  console.error(`pin: ${r.summary}`);
  // the child must not apply a pin again in process
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: { ...r.vars, BASED_GPU_PIN: "" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (sig: Deno.Signal) => () => {
    try {
      child.kill(sig);
    } catch { /* gone */ }
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, forward(sig));
  const st = await child.status;
  return st.signal ? 128 + (st.signal === "SIGKILL" ? 9 : 15) : st.code;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (e instanceof BasedError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
