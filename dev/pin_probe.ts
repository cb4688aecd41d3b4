/**
 * The GPU-pinning probe, for a machine with several GPUs (dev/pin_probe.sh
 * starts it): for each way of steering a process to a GPU, starts two probe
 * workers (local ranks 0 and 1, as mpirun would), and finds out which GPU each
 * one landed on. WebGPU does not expose the PCI bus or UUID, so the evidence
 * is NVIDIA's: rank r takes a recognisable amount of GPU memory (rank 0
 * 3 GiB, rank 1 7 GiB) and nvidia-smi's per-GPU memory.used (against a
 * baseline) and --query-compute-apps (pid, gpu_bus_id) are read while both
 * run a compute loop.
 *
 *   deno run -A dev/pin_probe.ts [--out DIR] [--only s1,s2] [--seconds S] [--alloc MiB0,MiB1]
 *     [--threads N]   (threads of the busy kernel, 4096 FMAs each; small on a CPU adapter)
 *
 * Strategies: parallel/pin.ts's (set at spawn, as its re-exec wrapper does,
 * and again applied in process through BASED_GPU_PIN, the trainer's path),
 * plus two spawn-only ones: `vk-driver-files` (a per-process copy of the
 * NVIDIA ICD manifest in VK_DRIVER_FILES, with CUDA_VISIBLE_DEVICES) and
 * `devnode` (a private mount namespace in which the other GPUs' /dev/nvidiaN
 * nodes do not exist; needs root and unshare).
 *
 * The Mesa device-select layer is taken from .device/pin/ when present
 * (dev/pin_probe.sh --pack copies it there), else from the system.
 * Writes pin_report.md and pin_raw.log into --out (default $OUT, else
 * ./pin-probe).
 */
import { join, resolve } from "node:path";
import { type GpuSlot, parseNvidiaSmi, pinEnv, type PinStrategy } from "../parallel/pin.ts";

const dec = new TextDecoder();
const args = Deno.args;
function opt(name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
const OUT = resolve(opt("--out") ?? Deno.env.get("OUT") ?? "pin-probe");
const SECONDS = Number(opt("--seconds") ?? 6);
const THREADS = opt("--threads") ?? String(1 << 22);
const ONLY = opt("--only")?.split(",");
const ALLOC = (opt("--alloc") ?? "3072,7168").split(",").map(Number); // MiB per local rank
const ROOT = resolve(new URL("..", import.meta.url).pathname);
const WORKER = join(ROOT, "dev/pin_probe_worker.ts");

const raw: string[] = [];
function log(s: string): void {
  console.log(s);
  raw.push(s);
}

async function sh(cmd: string, a: string[], env?: Record<string, string>): Promise<string> {
  try {
    const r = await new Deno.Command(cmd, { args: a, stdout: "piped", stderr: "piped", env })
      .output();
    return (dec.decode(r.stdout) + dec.decode(r.stderr)).trim();
  } catch (e) {
    return `(${cmd}: ${(e as Error).message.split("\n")[0]})`;
  }
}

async function memUsed(): Promise<Map<number, number>> {
  const t = await sh("nvidia-smi", [
    "--query-gpu=index,memory.used",
    "--format=csv,noheader,nounits",
  ]);
  const m = new Map<number, number>();
  for (const l of t.split("\n")) {
    const [i, v] = l.split(",").map((s) => s.trim());
    if (/^\d+$/.test(i) && /^\d+$/.test(v)) m.set(Number(i), Number(v));
  }
  return m;
}

// ------------------------------------------------------------------ setup

await Deno.mkdir(OUT, { recursive: true });
const gpus: GpuSlot[] = parseNvidiaSmi(
  await sh("nvidia-smi", [
    "--query-gpu=index,pci.bus_id,pci.device_id,uuid,name",
    "--format=csv,noheader",
  ]),
);
log(`# GPU pinning probe (${new Date().toISOString()})`);
log(`deno ${Deno.version.deno}; GPUs: ${gpus.length}`);
for (const g of gpus) {
  log(`  GPU ${g.index}: ${g.busId} ${g.pciId ?? "?"} ${g.uuid ?? ""} ${g.name ?? ""}`);
}
if (gpus.length < 2) log("warning: fewer than 2 GPUs: every strategy can only land on GPU 0");

// the Mesa device-select layer: carried in .device/pin (dev/pin_probe.sh --pack) or the system's
const common: Record<string, string> = {
  DENO_WEBGPU_BACKEND: "vulkan",
  VK_LOADER_DEBUG: "error,warn",
  NO_COLOR: "1",
};
const packDir = join(ROOT, ".device/pin");
let layerNote = "system (if mesa-vulkan-drivers is installed)";
try {
  const so = join(packDir, "lib/libVkLayer_MESA_device_select.so");
  await Deno.stat(so);
  const layerDir = await Deno.makeTempDir({ prefix: "pin-layer-" });
  await Deno.writeTextFile(
    join(layerDir, "VkLayer_MESA_device_select.json"),
    JSON.stringify({
      file_format_version: "1.0.0",
      layer: {
        name: "VK_LAYER_MESA_device_select",
        type: "GLOBAL",
        library_path: so,
        api_version: "1.3.211",
        implementation_version: "1",
        description: "Linux device selection layer (carried for the pinning probe)",
        functions: {
          vkNegotiateLoaderLayerInterfaceVersion: "vkNegotiateLoaderLayerInterfaceVersion",
        },
      },
    }),
  );
  common.VK_ADD_LAYER_PATH = layerDir;
  // the layer's libraries that this machine lacks (only those: the system's own stay first)
  const have = await sh("ldconfig", ["-p"]);
  const libDir = await Deno.makeTempDir({ prefix: "pin-lib-" });
  const added: string[] = [];
  for await (const f of Deno.readDir(join(packDir, "lib"))) {
    if (f.name.startsWith("libVkLayer_") || have.includes(`${f.name} `)) continue;
    await Deno.symlink(join(packDir, "lib", f.name), join(libDir, f.name));
    added.push(f.name);
  }
  if (added.length) {
    const ld = Deno.env.get("LD_LIBRARY_PATH");
    common.LD_LIBRARY_PATH = ld ? `${libDir}:${ld}` : libDir;
  }
  layerNote = `carried: ${so}; libraries added: ${added.join(" ") || "none"}`;
} catch { /* not packed */ }
log(`Mesa device-select layer: ${layerNote}`);
log(`VK_DRIVER_FILES=${Deno.env.get("VK_DRIVER_FILES") ?? "(unset)"}`);

// what the layer sees (MESA_VK_DEVICE_SELECT=list prints the devices and exits)
log("\n## MESA_VK_DEVICE_SELECT=list\n```");
log(
  await sh(Deno.execPath(), ["run", "-A", WORKER, "--tag", "list", "--alloc-mib", "1"], {
    ...common,
    VK_LOADER_LAYERS_ENABLE: "*MESA_device_select*",
    MESA_VK_DEVICE_SELECT: "list",
  }),
);
log("```");

// ------------------------------------------------------------------ strategies

interface Outcome {
  name: string;
  mode: "spawn" | "in-process";
  ranks: { gpu: string; adapter: string; status: string }[];
  verdict: string;
}

function icdPath(): string | undefined {
  const v = Deno.env.get("VK_DRIVER_FILES") ?? Deno.env.get("VK_ICD_FILENAMES");
  if (v) return v.split(":")[0];
  for (
    const p of [
      "/usr/share/vulkan/icd.d/nvidia_icd.json",
      "/etc/vulkan/icd.d/nvidia_icd.json",
      "/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json",
    ]
  ) {
    try {
      Deno.statSync(p);
      return p;
    } catch { /* next */ }
  }
  return undefined;
}

/** The device minor of a GPU (/proc/driver/nvidia/gpus/<bus>/information). */
function minorOf(g: GpuSlot): number {
  const bus = g.busId.toLowerCase().replace(/^0000(?=[0-9a-f]{4}:)/, "");
  try {
    const t = Deno.readTextFileSync(`/proc/driver/nvidia/gpus/${bus}/information`);
    const m = /Device Minor:\s*(\d+)/.exec(t);
    return m ? Number(m[1]) : g.index;
  } catch {
    return g.index;
  }
}

const DEVNODE_SCRIPT = `set -e
hide="$1"; shift
tmp=$(mktemp -d)
mount -t tmpfs tmpfs "$tmp"
cp -ax /dev/. "$tmp"/
for n in $hide; do rm -f "$tmp/$n"; done
for m in shm pts mqueue; do
  if [ -d "/dev/$m" ]; then mkdir -p "$tmp/$m"; mount --rbind "/dev/$m" "$tmp/$m"; fi
done
mount --bind "$tmp" /dev
exec "$@"`;

/** How local rank r is started under a strategy (env vars and an optional command prefix). */
async function launchFor(
  name: string,
  mode: Outcome["mode"],
  r: number,
): Promise<{ env: Record<string, string>; prefix: string[] }> {
  const slot = gpus[r % Math.max(1, gpus.length)] ?? { index: r, busId: `0000:0${r}:00.0` };
  const base = {
    ...common,
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_RANK: String(r),
    OMPI_COMM_WORLD_LOCAL_RANK: String(r),
  };
  if (name === "vk-driver-files") {
    const icd = icdPath();
    const env: Record<string, string> = { ...base, CUDA_VISIBLE_DEVICES: String(slot.index) };
    if (icd) {
      const copy = join(await Deno.makeTempDir({ prefix: `pin-icd${r}-` }), "nvidia_icd.json");
      await Deno.copyFile(icd, copy);
      env.VK_DRIVER_FILES = copy;
    }
    return { env, prefix: [] };
  }
  if (name === "devnode") {
    const hide = gpus.filter((g) => g !== slot).map((g) => `nvidia${minorOf(g)}`).join(" ");
    return {
      env: base,
      prefix: [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        DEVNODE_SCRIPT,
        "sh",
        hide,
      ],
    };
  }
  const strategy = name as PinStrategy;
  if (mode === "in-process") {
    return {
      env: {
        ...base,
        BASED_GPU_PIN: strategy,
        BASED_GPU_PIN_DEVICES: gpus.map((g) => `${g.busId}${g.pciId ? "@" + g.pciId : ""}`).join(
          ",",
        ),
      },
      prefix: [],
    };
  }
  let vars: Record<string, string> = {};
  try {
    vars = pinEnv(strategy, slot, base);
  } catch (e) {
    vars = { PIN_ERROR: (e as Error).message };
  }
  return { env: { ...base, ...vars }, prefix: [] };
}

async function round(name: string, mode: Outcome["mode"]): Promise<Outcome> {
  log(`\n## ${name} (${mode})`);
  const before = await memUsed();
  const procs: {
    child: Deno.ChildProcess;
    lines: string[];
    err: string[];
    ready: Promise<void>;
    done: Promise<Deno.CommandStatus>;
  }[] = [];
  for (let r = 0; r < 2; r++) {
    const { env, prefix } = await launchFor(name, mode, r);
    log(
      `rank ${r}: ${
        Object.entries(env).filter(([k]) => !/^(OMPI_|NO_COLOR|VK_LOADER_DEBUG)/.test(k)).map((
          [k, v],
        ) => `${k}=${v}`).join(" ")
      }`,
    );
    const cmd = [
      ...prefix,
      Deno.execPath(),
      "run",
      "-A",
      WORKER,
      "--tag",
      `rank${r}`,
      "--alloc-mib",
      String(ALLOC[r]),
      "--seconds",
      String(SECONDS),
      "--threads",
      THREADS,
    ];
    const child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines: string[] = [], err: string[] = [];
    let readyResolve!: () => void;
    const ready = new Promise<void>((res) => (readyResolve = res));
    const pump = async (s: ReadableStream<Uint8Array>, into: string[], watch: boolean) => {
      let buf = "";
      for await (const chunk of s) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const l = buf.slice(0, i);
          buf = buf.slice(i + 1);
          into.push(l);
          if (watch && /^(READY|FAIL) /.test(l)) readyResolve();
        }
      }
      if (buf) into.push(buf);
      readyResolve();
    };
    const p1 = pump(child.stdout, lines, true), p2 = pump(child.stderr, err, false);
    const done = child.status.then(async (st) => {
      await Promise.all([p1, p2]);
      return st;
    });
    procs.push({ child, lines, err, ready, done });
  }
  let waitTimer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(procs.map((p) => p.ready)),
    new Promise((r) => (waitTimer = setTimeout(r, 90_000))),
  ]);
  clearTimeout(waitTimer);
  await new Promise((r) => setTimeout(r, 1500));
  const during = await memUsed();
  const apps = await sh("nvidia-smi", [
    "--query-compute-apps=pid,gpu_bus_id,used_memory",
    "--format=csv,noheader",
  ]);
  const util = await sh("nvidia-smi", [
    "--query-gpu=index,utilization.gpu,memory.used",
    "--format=csv,noheader",
  ]);
  log(`compute apps:\n${apps || "(none listed)"}\nper GPU (index, util, memory.used):\n${util}`);
  // a worker that hangs (e.g. in the adapter request) is killed
  const killer = setTimeout(() => {
    for (const p of procs) {
      try {
        p.child.kill("SIGKILL");
      } catch { /* exited */ }
    }
  }, (SECONDS + 60) * 1000);
  const sts = await Promise.all(procs.map((p) => p.done));
  clearTimeout(killer);

  // attribution: the GPU whose memory grew by about a rank's allocation, or nvidia-smi's pid list
  const delta = new Map<number, number>();
  for (const [i, v] of during) delta.set(i, v - (before.get(i) ?? 0));
  log(`memory growth (MiB) per GPU: ${[...delta].map(([i, d]) => `${i}:+${d}`).join(" ")}`);
  const ranks: Outcome["ranks"] = [];
  for (let r = 0; r < 2; r++) {
    const p = procs[r];
    const ready = p.lines.find((l) => l.startsWith("READY "));
    const fail = p.lines.find((l) => l.startsWith("FAIL "));
    let adapter = "-", pid = -1;
    if (ready) {
      const j = JSON.parse(ready.slice(6));
      adapter = `${j.adapter.description || j.info} [${j.adapter.vendor}/${j.adapter.device}]`;
      pid = j.pid;
    }
    const gpuByMem = [...delta].filter(([, d]) =>
      Math.abs(d - ALLOC[r]) < 900 || Math.abs(d - ALLOC[0] - ALLOC[1]) < 900
    ).map(([i, d]) => (Math.abs(d - ALLOC[0] - ALLOC[1]) < 900 ? `${i} (both)` : `${i}`));
    const app = apps.split("\n").find((l) => l.split(",")[0]?.trim() === String(pid));
    const appBus = app?.split(",")[1]?.trim().toLowerCase();
    const byPid = gpus.find((g) => g.busId.toLowerCase() === appBus);
    const gpu = byPid ? String(byPid.index) : gpuByMem.join("|") || "?";
    const status = fail
      ? `FAIL ${JSON.parse(fail.slice(5)).error}`
      : ready
      ? `ok (exit ${sts[r].code})`
      : `exit ${sts[r].code}`;
    ranks.push({ gpu, adapter, status });
    log(`rank ${r}: ${status}; adapter ${adapter}; GPU ${gpu}`);
    for (const l of p.lines) raw.push(`  rank ${r} out: ${l}`);
    for (const l of p.err.slice(-20)) raw.push(`  rank ${r} err: ${l}`);
  }
  const ok = ranks.every((x) => x.status.startsWith("ok"));
  const g0 = ranks[0].gpu, g1 = ranks[1].gpu;
  const verdict = !ok
    ? "failed"
    : g0 === "?" || g1 === "?"
    ? "unknown"
    : /both/.test(g0 + g1) || g0 === g1
    ? "same GPU"
    : "DISTINCT";
  log(`verdict: ${verdict}`);
  return { name, mode, ranks, verdict };
}

const SPAWN = [
  "none",
  "dri-prime",
  "mesa-vid-did",
  "loader-vid-did",
  "cuda-visible",
  "nv-prime",
  "vk-driver-files",
  "devnode",
];
const INPROC = ["dri-prime", "mesa-vid-did", "loader-vid-did", "cuda-visible", "nv-prime"];
const outcomes: Outcome[] = [];
async function tryRound(name: string, mode: Outcome["mode"]): Promise<void> {
  if (ONLY && !ONLY.includes(name)) return;
  try {
    outcomes.push(await round(name, mode));
  } catch (e) {
    const status = `error: ${(e as Error).message.split("\n")[0]}`;
    log(status);
    const r = { gpu: "?", adapter: "-", status };
    outcomes.push({ name, mode, ranks: [r, r], verdict: "failed" });
  }
}
for (const s of SPAWN) await tryRound(s, "spawn");
for (const s of INPROC) await tryRound(s, "in-process");

const table = [
  "| strategy | set | rank 0 GPU | rank 1 GPU | verdict |",
  "| --- | --- | --- | --- | --- |",
  ...outcomes.map((o) =>
    `| ${o.name} | ${o.mode} | ${o.ranks[0].gpu} (${o.ranks[0].status}) | ${o.ranks[1].gpu} (${
      o.ranks[1].status
    }) | ${o.verdict} |`
  ),
];
log("\n## summary\n" + table.join("\n"));
const winners = outcomes.filter((o) => o.verdict === "DISTINCT").map((o) =>
  `${o.name} (${o.mode})`
);
log(
  winners.length
    ? `\nworks: ${winners.join(", ")}`
    : "\nno strategy put the two ranks on different GPUs",
);
await Deno.writeTextFile(
  join(OUT, "pin_report.md"),
  raw.filter((l) => !l.startsWith("  rank ")).join("\n") + "\n",
);
await Deno.writeTextFile(join(OUT, "pin_raw.log"), raw.join("\n") + "\n");
console.log(`\nwrote ${join(OUT, "pin_report.md")} and pin_raw.log`);
