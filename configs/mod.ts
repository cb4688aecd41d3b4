/**
 * based's config tree (the YAML files beside this module, compiled in by
 * bundle.ts, which gen_bundle.ts writes) as a source of the config package
 * (config/), and composition over it: what `based train` and the library
 * compose from unless given other sources.
 */
import {
  composeConfig as composeWith,
  type ComposeOptions,
  composeRaw as composeRawWith,
  type Composition,
  type Config,
  type ConfigSource,
  mapSource,
} from "../config/mod.ts";
import { BUNDLE } from "./bundle.ts";

/** The configs/ tree compiled into the program. */
export const BUILTIN: ConfigSource = mapSource(BUNDLE, "built-in", "configs/");

/** Options of a composition; `sources` defaults to the built-in tree. */
export type RunComposeOptions = Omit<ComposeOptions, "sources"> & { sources?: ConfigSource[] };

/** composeConfig over the built-in tree (after `extraSources`), unless `sources` is given. */
export function composeConfig(overrides: string[], opts: RunComposeOptions = {}): Config {
  return composeWith(overrides, { ...opts, sources: opts.sources ?? [BUILTIN] });
}

/** composeRaw over the built-in tree, unless `sources` is given. */
export function composeRaw(overrides: string[], opts: RunComposeOptions = {}): Composition {
  return composeRawWith(overrides, { ...opts, sources: opts.sources ?? [BUILTIN] });
}
