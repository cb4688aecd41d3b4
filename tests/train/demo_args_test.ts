/** `based demo`: all 60 steps unless the adapter is the GL software path; the user's overrides win. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { DEMO_EXPERIMENT, demoArgs, GL_DEMO_STEPS } from "../../train/demo.ts";

Deno.test("demo: 60 steps (the experiment's) on Vulkan or a GPU", () => {
  assertEquals(demoArgs(false, []), { args: [DEMO_EXPERIMENT] });
  assertEquals(demoArgs(false, ["seed=3"]).args, [DEMO_EXPERIMENT, "seed=3"]);
});

Deno.test("demo: fewer steps on the GL software path, said in one line with the install command", () => {
  const r = demoArgs(true, ["seed=3"]);
  assertEquals(r.args, [DEMO_EXPERIMENT, `trainer.max_steps=${GL_DEMO_STEPS}`, "seed=3"]);
  assert(r.note && !r.note.includes("\n"), r.note);
  assert(r.note!.includes("apt-get install mesa-vulkan-drivers libvulkan1"));
  // the user's step count wins
  assertEquals(demoArgs(true, ["trainer.max_steps=60"]), {
    args: [DEMO_EXPERIMENT, "trainer.max_steps=60"],
  });
});
