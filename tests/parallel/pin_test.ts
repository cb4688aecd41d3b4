/** GPU pinning (parallel/pin.ts): slot parsing, each strategy's variables, the re-exec wrapper. */
import { deepStrictEqual as assertEquals, ok as assert, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { BasedError } from "../../errors.ts";
import {
  driPrimeTag,
  parseDeviceList,
  parseNvidiaSmi,
  pciIdFromNvidia,
  pinEnv,
  planPin,
  STRATEGIES,
} from "../../parallel/pin.ts";
import { REPO } from "../helpers.ts";

const H200 = { index: 1, busId: "00000000:3B:00.0", pciId: "10de:2335", uuid: "GPU-abc" };
const DEVICES = "0000:19:00.0@10de:2335,0000:3b:00.0@10de:2335";

Deno.test("pin: PCI ids, DRI_PRIME tags and nvidia-smi's list", () => {
  assertEquals(driPrimeTag("00000000:19:00.0"), "pci-0000_19_00_0");
  assertEquals(driPrimeTag("0001:3B:1f.7"), "pci-0001_3b_1f_7");
  assertEquals(driPrimeTag("3b:00.1"), "pci-0000_3b_00_1");
  throws(() => driPrimeTag("GPU-1234"), BasedError);
  assertEquals(pciIdFromNvidia("0x233510DE"), "10de:2335");
  assertEquals(
    parseNvidiaSmi(
      "0, 00000000:19:00.0, 0x233510DE, GPU-aaa, NVIDIA H200\n" +
        "1, 00000000:3B:00.0, 0x233510DE, GPU-bbb, NVIDIA H200\n",
    ),
    [
      {
        index: 0,
        busId: "00000000:19:00.0",
        pciId: "10de:2335",
        uuid: "GPU-aaa",
        name: "NVIDIA H200",
      },
      {
        index: 1,
        busId: "00000000:3B:00.0",
        pciId: "10de:2335",
        uuid: "GPU-bbb",
        name: "NVIDIA H200",
      },
    ],
  );
  assertEquals(parseDeviceList(DEVICES)[1], {
    index: 1,
    busId: "0000:3b:00.0",
    pciId: "10de:2335",
  });
  assertEquals(parseDeviceList("0000:19:00.0")[0].pciId, undefined);
  throws(() => parseDeviceList("0000:19:00.0@nvidia"), BasedError);
});

Deno.test("pin: the variables of each strategy", () => {
  assertEquals(pinEnv("none", H200), {});
  assertEquals(pinEnv("dri-prime", H200, { VK_LOADER_LAYERS_ENABLE: "*validation*" }), {
    VK_LOADER_LAYERS_ENABLE: "*validation*,*MESA_device_select*",
    DRI_PRIME: "pci-0000_3b_00_0",
    MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
  });
  assertEquals(pinEnv("mesa-vid-did", H200).MESA_VK_DEVICE_SELECT, "10de:2335");
  assertEquals(pinEnv("loader-vid-did", H200), { VK_LOADER_DEVICE_SELECT: "10de:2335" });
  assertEquals(pinEnv("cuda-visible", H200), {
    CUDA_VISIBLE_DEVICES: "GPU-abc",
    CUDA_DEVICE_ORDER: "PCI_BUS_ID",
  });
  assertEquals(pinEnv("cuda-visible", { index: 3, busId: "0:3:0.0" }).CUDA_VISIBLE_DEVICES, "3");
  assertEquals(pinEnv("nv-prime", H200).__VK_LAYER_NV_optimus, "NVIDIA_only");
  throws(() => pinEnv("mesa-vid-did", { index: 0, busId: "0:1:0.0" }), /vendor:device id/);
  for (const s of STRATEGIES) pinEnv(s, H200); // every strategy has a mapping
});

Deno.test("pin: local rank picks the slot; unknown strategies are refused", async () => {
  const env = { BASED_GPU_PIN_DEVICES: DEVICES };
  const r = await planPin({ strategy: "dri-prime", localRank: 3, env });
  assertEquals([r.slot?.index, r.vars.DRI_PRIME], [1, "pci-0000_3b_00_0"]);
  assert(r.summary.startsWith("dri-prime: local rank 3 -> GPU 1 (0000:3b:00.0)"), r.summary);
  assertEquals((await planPin({ strategy: "none", localRank: 0, env })).vars, {});
  await rejects(
    planPin({ strategy: "wgpu-adapter-name", localRank: 0, env }),
    /BASED_GPU_PIN=wgpu-adapter-name is not a pinning strategy \(use one of none, dri-prime/,
  );
});

Deno.test("pin: the re-exec wrapper runs the command with the rank's variables", async () => {
  const run = async (args: string[], env: Record<string, string>) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(REPO, "parallel/pin.ts"), ...args],
      env: { BASED_GPU_PIN_DEVICES: DEVICES, ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, out: new TextDecoder().decode(r.stdout).trim() };
  };
  const printed = await run(["--strategy", "dri-prime", "--local-rank", "1", "--print"], {});
  assertEquals(printed.code, 0);
  assert(printed.out.split("\n").includes("DRI_PRIME=pci-0000_3b_00_0"), printed.out);
  // local rank from mpirun's variables; the child's exit status comes back; no second pin
  const child = await run([
    "--strategy",
    "cuda-visible",
    "--",
    "sh",
    "-c",
    'echo "$CUDA_VISIBLE_DEVICES|$BASED_GPU_PIN"; exit 3',
  ], {
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_LOCAL_RANK: "1",
    BASED_GPU_PIN: "cuda-visible",
  });
  assertEquals(child, { code: 3, out: "1|" });
  assertEquals((await run(["--strategy", "bogus", "--print"], {})).code, 2);
});

Deno.test({
  name: "pin: variables set in process before the adapter request reach the Vulkan loader",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // the in-process mode relies on Deno creating its Vulkan instance at the first request
    const probe = async (set: boolean) => {
      const code = (set ? 'Deno.env.set("VK_DRIVER_FILES", "/nonexistent/icd.json");' : "") +
        "const a = await navigator.gpu.requestAdapter(); console.log(a ? 'adapter' : 'none');";
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        env: { DENO_WEBGPU_BACKEND: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "vulkan" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return new TextDecoder().decode(r.stdout).trim();
    };
    if ((await probe(false)) !== "adapter") {
      console.warn("pin: no Vulkan adapter here; the in-process check is skipped");
      return;
    }
    assertEquals(await probe(true), "none");
  },
});
