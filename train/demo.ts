/**
 * `based demo` (`deno task demo`): trains based-tiny on the bundled corpus,
 * 60 steps. On the GL software path (a CPU adapter without a Vulkan driver)
 * its kernels compile for minutes and each step takes seconds, so the demo
 * runs 20 steps there (one validation, one checkpoint, the test), and says so
 * in one line with the command that installs the faster driver. Overrides
 * given by the user are kept and win (trainer.max_steps=60 runs all 60).
 */
export const DEMO_EXPERIMENT = "experiment=example/based-tiny";
export const GL_DEMO_STEPS = 20;

/** The demo's overrides on this adapter, and the line to print (if any). */
export function demoArgs(softwareGl: boolean, overrides: string[]): {
  args: string[];
  note?: string;
} {
  const args = [DEMO_EXPERIMENT, ...overrides];
  const userSteps = overrides.some((o) => /^\+{0,2}trainer\.max_steps=/.test(o));
  if (!softwareGl || userSteps) return { args };
  return {
    args: [DEMO_EXPERIMENT, `trainer.max_steps=${GL_DEMO_STEPS}`, ...overrides],
    note: `demo: ${GL_DEMO_STEPS} steps instead of 60 on the GL software path ` +
      "(trainer.max_steps=60 for all); with Mesa's Vulkan driver it runs all 60 faster: " +
      "apt-get install mesa-vulkan-drivers libvulkan1",
  };
}
