/**
 * `based demo` (`deno task demo`): trains based-tiny on the bundled corpus.
 * It runs the experiment's 60 steps on a GPU and on a CPU adapter through
 * Vulkan (Mesa's lavapipe: about 3.5 minutes on 2 idle cores). On the GL
 * software path (no Vulkan driver) its kernels compile for minutes, so it runs
 * GL_DEMO_STEPS there and says, in one line, how to install the faster driver.
 * A `trainer.max_steps` given by the user is kept and wins.
 */
export const DEMO_EXPERIMENT = "experiment=example/based-tiny";
export const GL_DEMO_STEPS = 20;

/** The demo's overrides on this adapter, and the line to print (if any). */
export function demoArgs(
  adapter: { softwareGl: boolean },
  overrides: string[],
): { args: string[]; note?: string } {
  const args = [DEMO_EXPERIMENT, ...overrides];
  const userSteps = overrides.some((o) => /^\+{0,2}trainer\.max_steps=/.test(o));
  if (userSteps || !adapter.softwareGl) return { args };
  return {
    args: [DEMO_EXPERIMENT, `trainer.max_steps=${GL_DEMO_STEPS}`, ...overrides],
    note: `demo: ${GL_DEMO_STEPS} steps instead of 60 on the GL software path ` +
      "(trainer.max_steps=60 for all); with Mesa's Vulkan driver it runs all 60 faster: " +
      "apt-get install mesa-vulkan-drivers libvulkan1",
  };
}
