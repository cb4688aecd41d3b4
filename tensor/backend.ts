/**
 * Which WebGPU backend Deno starts. Deno reads DENO_WEBGPU_BACKEND once, when
 * WebGPU first starts; left unset on Linux, wgpu may settle on its GL backend
 * (Mesa's llvmpipe through EGL), which compiles our shaders many times slower
 * than the Vulkan backend on the same CPU (Mesa's lavapipe). So before the
 * first adapter request we look for an installed Vulkan driver (an ICD json
 * file and the loader, libvulkan.so.1) and, when the user chose nothing, set
 * DENO_WEBGPU_BACKEND=vulkan in this process. The decision is a pure function
 * of what was found ({@link chooseBackend}); {@link probeVulkan} does the
 * looking.
 */

/** The directories the Vulkan loader reads ICD manifests from (Linux). */
export const ICD_DIRS = [
  "/usr/share/vulkan/icd.d",
  "/etc/vulkan/icd.d",
  "/usr/local/share/vulkan/icd.d",
  "/usr/local/etc/vulkan/icd.d",
];

/** Where libvulkan.so.1 usually lives (Debian multiarch, Fedora, others). */
export const LOADER_DIRS = [
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib/aarch64-linux-gnu",
  "/lib/x86_64-linux-gnu",
  "/lib/aarch64-linux-gnu",
  "/usr/lib64",
  "/usr/lib",
  "/lib64",
  "/lib",
  "/usr/local/lib",
];

/** What was found on this machine. */
export interface VulkanProbe {
  os: string;
  /** DENO_WEBGPU_BACKEND as the user set it (undefined or "" when not set) */
  env: string | undefined;
  /** ICD manifests found (*.json under ICD_DIRS, or VK_ICD_FILENAMES / VK_DRIVER_FILES) */
  icds: string[];
  /** whether libvulkan.so.1 was found */
  loader: boolean;
}

export interface BackendChoice {
  /** the value DENO_WEBGPU_BACKEND should have; undefined: leave it unset */
  backend: string | undefined;
  /** true when we set it (the user did not) */
  auto: boolean;
  /** one phrase for `based info` */
  why: string;
}

/** The backend to start WebGPU with, from what was found. */
export function chooseBackend(p: VulkanProbe): BackendChoice {
  if (p.env) return { backend: p.env, auto: false, why: "DENO_WEBGPU_BACKEND" };
  if (p.os !== "linux") return { backend: undefined, auto: false, why: "default" };
  if (p.icds.length > 0 && p.loader) {
    return { backend: "vulkan", auto: true, why: "a Vulkan driver is installed" };
  }
  return { backend: undefined, auto: false, why: "no Vulkan driver found" };
}

function listJson(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".json")).map((e) =>
      `${dir}/${e.name}`
    );
  } catch {
    return [];
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Looks for the Vulkan loader and ICDs the way the loader would (the usual places). */
export function probeVulkan(): VulkanProbe {
  const env = (k: string) => Deno.env.get(k) || undefined;
  const icds: string[] = [];
  // as the loader does: an explicit list replaces the search of the usual directories
  const explicit = env("VK_DRIVER_FILES") ?? env("VK_ICD_FILENAMES");
  if (explicit) icds.push(...explicit.split(":").filter(exists));
  else {
    const xdg = (env("XDG_DATA_DIRS") ?? "").split(":").filter(Boolean).map((d) =>
      `${d}/vulkan/icd.d`
    );
    for (const d of new Set([...ICD_DIRS, ...xdg])) icds.push(...listJson(d));
  }
  const ld = (env("LD_LIBRARY_PATH") ?? "").split(":").filter(Boolean);
  const loader = [...ld, ...LOADER_DIRS].some((d) => exists(`${d}/libvulkan.so.1`));
  return { os: Deno.build.os, env: env("DENO_WEBGPU_BACKEND"), icds, loader };
}

let chosen: BackendChoice | null = null;

/**
 * Chooses the backend once, before WebGPU starts, and sets DENO_WEBGPU_BACKEND
 * in this process when the user did not. Later calls return the first choice.
 */
export function selectBackend(probe: () => VulkanProbe = probeVulkan): BackendChoice {
  if (chosen) return chosen;
  chosen = chooseBackend(probe());
  if (chosen.auto && chosen.backend) Deno.env.set("DENO_WEBGPU_BACKEND", chosen.backend);
  // Without XDG_RUNTIME_DIR (a root shell, a container) the windowing probe of
  // WebGPU's start prints "error: XDG_RUNTIME_DIR is invalid or not set": give
  // it a private directory of its own so a working run prints no false error.
  if (Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")) {
    try {
      Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "based-xdg-" }));
    } catch { /* no writable temp dir: the message stays, harmless */ }
  }
  return chosen;
}

/** The one line printed when WebGPU runs on the CPU through GL (no Vulkan driver). */
export const GL_SOFTWARE_NOTE =
  "note: WebGPU runs on the CPU through GL (llvmpipe), which compiles kernels slowly; Mesa's " +
  "Vulkan driver is faster and used automatically once installed: " +
  "apt-get install mesa-vulkan-drivers libvulkan1";

/**
 * Whether an adapter is the GL software path: a CPU adapter without the
 * Vulkan backend on Linux (GL chosen, or nothing chosen and no Vulkan found).
 */
export function isSoftwareGl(
  os: string,
  backend: string | undefined,
  isFallback: boolean,
): boolean {
  if (!isFallback || os !== "linux") return false;
  const b = (backend ?? "").toLowerCase();
  return b === "" || b === "gl" || b === "gles" || b === "opengl";
}
