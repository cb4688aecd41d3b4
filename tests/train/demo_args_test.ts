/** `based demo`: 60 steps unless the adapter is the GL software path (said in one line); the user's overrides win. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { DEMO_EXPERIMENT, demoArgs, GL_DEMO_STEPS } from "../../train/demo.ts";

const GPU = { softwareGl: false, isFallback: false };
const LAVAPIPE = { softwareGl: false, isFallback: true };
const GL = { softwareGl: true, isFallback: true };

Deno.test("demo: 60 steps (the experiment's) on a GPU", () => {
  assertEquals(demoArgs(GPU, []), { args: [DEMO_EXPERIMENT] });
  assertEquals(demoArgs(GPU, ["seed=3"]).args, [DEMO_EXPERIMENT, "seed=3"]);
});

Deno.test("demo: 60 steps on a CPU adapter through Vulkan (lavapipe)", () => {
  assertEquals(demoArgs(LAVAPIPE, []), { args: [DEMO_EXPERIMENT] });
});

Deno.test("demo: fewer steps on the GL software path, said in one line with the install command", () => {
  const r = demoArgs(GL, ["seed=3"]);
  assertEquals(r.args, [DEMO_EXPERIMENT, `trainer.max_steps=${GL_DEMO_STEPS}`, "seed=3"]);
  assert(r.note && !r.note.includes("\n"), r.note);
  assert(r.note!.includes("apt-get install mesa-vulkan-drivers libvulkan1"));
  // the user's step count wins
  assertEquals(demoArgs(GL, ["trainer.max_steps=60"]), {
    args: [DEMO_EXPERIMENT, "trainer.max_steps=60"],
  });
});
