/** Shared CLI plumbing: composing the config from the command line. */
import { type Config, dirSource } from "../config/mod.ts";
import { composeConfig } from "../configs/mod.ts";

export async function loadConfig(overrides: string[], configDir?: string): Promise<Config> {
  const sources = configDir ? [await dirSource(configDir)] : [];
  return composeConfig(overrides, {
    extraSources: sources,
    cwd: Deno.cwd(),
    env: Deno.env.toObject(),
  });
}
