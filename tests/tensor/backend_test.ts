/**
 * The WebGPU backend choice: Vulkan whenever a Vulkan driver is installed and
 * the user chose nothing (a pure function of what was found), and that the
 * choice reaches Deno (DENO_WEBGPU_BACKEND is set before WebGPU starts).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  chooseBackend,
  GL_SOFTWARE_NOTE,
  isSoftwareGl,
  probeVulkan,
  type VulkanProbe,
} from "../../tensor/backend.ts";

const LVP = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
const probe = (p: Partial<VulkanProbe>): VulkanProbe => ({
  os: "linux",
  env: undefined,
  icds: [],
  loader: false,
  ...p,
});

Deno.test("backend: Vulkan when an ICD and the loader are installed and the user set nothing", () => {
  assertEquals(chooseBackend(probe({ icds: [LVP], loader: true })), {
    backend: "vulkan",
    auto: true,
    why: "a Vulkan driver is installed",
  });
  // the user's choice always wins, whatever is installed
  assertEquals(chooseBackend(probe({ env: "gl", icds: [LVP], loader: true })).backend, "gl");
  assertEquals(chooseBackend(probe({ env: "gl", icds: [LVP], loader: true })).auto, false);
  // an empty variable counts as unset
  assertEquals(chooseBackend(probe({ env: "", icds: [LVP], loader: true })).backend, "vulkan");
});

Deno.test("backend: nothing set without an ICD, without the loader, or off Linux", () => {
  for (
    const p of [
      probe({}),
      probe({ icds: [LVP] }),
      probe({ loader: true }),
      probe({ os: "darwin", icds: [LVP], loader: true }),
    ]
  ) {
    const c = chooseBackend(p);
    assertEquals([c.backend, c.auto], [undefined, false], JSON.stringify(p));
  }
});

Deno.test("backend: the GL software path is a CPU adapter without Vulkan on Linux", () => {
  assert(isSoftwareGl("linux", undefined, true));
  assert(isSoftwareGl("linux", "gl", true));
  assert(!isSoftwareGl("linux", "vulkan", true)); // lavapipe
  assert(!isSoftwareGl("linux", undefined, false)); // a GPU through GL
  assert(!isSoftwareGl("darwin", undefined, true));
  // the note is one line with the one command that installs the faster driver
  assert(!GL_SOFTWARE_NOTE.includes("\n"));
  assert(GL_SOFTWARE_NOTE.includes("apt-get install mesa-vulkan-drivers libvulkan1"));
});

Deno.test({
  name:
    "backend: with a Vulkan driver installed, a process without DENO_WEBGPU_BACKEND gets Vulkan",
  ignore: chooseBackend({ ...probeVulkan(), env: undefined }).backend !== "vulkan",
  fn: async () => {
    const env = { ...Deno.env.toObject() };
    delete env.DENO_WEBGPU_BACKEND;
    const code = `
      import { requestGpu } from ${
      JSON.stringify(new URL("../../tensor/device.ts", import.meta.url).href)
    };
      const g = await requestGpu();
      console.log(JSON.stringify({ env: Deno.env.get("DENO_WEBGPU_BACKEND"), info: g.info }));
      g.device.destroy();`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(text.split("\n").pop()!);
    assertEquals(r.env, "vulkan");
    assertEquals(r.info.backend, "vulkan");
    assertEquals(r.info.softwareGl, false);
    // it took effect: Mesa's lavapipe offers shader-f16, Deno's GL backend never does
    if (probeVulkan().icds.some((f) => /lvp_icd/.test(f))) {
      assert(r.info.features.includes("shader-f16"), r.info.features.join(", "));
    }
  },
});

Deno.test("backend: VK_DRIVER_FILES replaces the search, as in the Vulkan loader", () => {
  const saved = Deno.env.get("VK_DRIVER_FILES");
  try {
    Deno.env.set("VK_DRIVER_FILES", "/nonexistent/icd.json");
    assertEquals(probeVulkan().icds, []);
  } finally {
    if (saved === undefined) Deno.env.delete("VK_DRIVER_FILES");
    else Deno.env.set("VK_DRIVER_FILES", saved);
  }
});
