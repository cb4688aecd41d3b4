/**
 * `based demo` (`deno task demo`): trains based-tiny on the bundled corpus.
 * On a GPU it runs the experiment's 60 steps. On a CPU adapter through Vulkan
 * (Mesa's lavapipe) a step takes ~5-7 s on 2 cores, so the demo runs
 * CPU_DEMO_STEPS there to finish within 5 minutes; on the GL software path (no
 * Vulkan driver) its kernels compile for minutes, so it runs GL_DEMO_STEPS and
 * says how to install the faster driver. Either is said in one line; a
 * `trainer.max_steps` given by the user is kept and wins.
 */
export const DEMO_EXPERIMENT = "experiment=example/based-tiny";
export const CPU_DEMO_STEPS = 40;
export const GL_DEMO_STEPS = 20;

/** The demo's overrides on this adapter, and the line to print (if any). */
export function demoArgs(
  adapter: { softwareGl: boolean; isFallback: boolean },
  overrides: string[],
): { args: string[]; note?: string } {
  const args = [DEMO_EXPERIMENT, ...overrides];
  const userSteps = overrides.some((o) => /^\+{0,2}trainer\.max_steps=/.test(o));
  if (userSteps || !(adapter.softwareGl || adapter.isFallback)) return { args };
  const steps = adapter.softwareGl ? GL_DEMO_STEPS : CPU_DEMO_STEPS;
  const why = adapter.softwareGl
    ? "on the GL software path; with Mesa's Vulkan driver it runs faster: " +
      "apt-get install mesa-vulkan-drivers libvulkan1"
    : "on a CPU adapter (about 5 minutes on 2 cores)";
  return {
    args: [DEMO_EXPERIMENT, `trainer.max_steps=${steps}`, ...overrides],
    note: `demo: ${steps} steps instead of 60 ${why} (trainer.max_steps=60 for all)`,
  };
}
