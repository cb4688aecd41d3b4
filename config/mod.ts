/**
 * A Hydra 1.3 / OmegaConf 2.3 work-alike: composition of a YAML tree given as
 * config sources, command-line overrides, interpolation with a safe `eval`,
 * typed accessors. Self-contained: it imports nothing outside this folder
 * (and the `yaml` npm package).
 *
 *   const cfg = composeConfig(["experiment=example/based-360m", "trainer.devices=1"], {
 *     sources: [await dirSource("configs")],
 *   });
 *   cfgInt(cfg, "trainer.accumulate_grad_batches")  // 32
 *   toYaml(cfg)                                      // YAML that parses back to cfg
 *
 * Every failure is a one-line ConfigError.
 */
import { type Override, parseOverride as parseOverride_ } from "./overrides.ts";
import { type ResolveContext, resolveTree as resolveTree_ } from "./resolve.ts";
import { safeEval as safeEval_ } from "./safe_eval.ts";
import { type Budget, type ConfigMap, type ConfigValue, guard, type Scalar } from "./util.ts";
import { parseYaml as parseYaml_, toYaml as toYaml_ } from "./yaml_io.ts";

export {
  applyOverrides,
  composeConfig,
  type ComposeOptions,
  composeRaw,
  type Composition,
} from "./compose.ts";
export { ConfigError, USER_ERROR } from "./errors.ts";
export { cfgBool, cfgGet, cfgInt, cfgList, cfgMap, cfgNum, cfgStr } from "./access.ts";
export { type ConfigSource, dirSource, dirSourceSync, mapSource } from "./source.ts";
export { allPaths, type ResolveContext, RESOLVERS, splitKey, strftime } from "./resolve.ts";
export type { Override } from "./overrides.ts";
export {
  Budget,
  closestKey,
  type Config,
  type ConfigMap,
  type ConfigValue,
  editDistance,
  type Obj,
  pyStr,
  rankByDistance,
  type Scalar,
} from "./util.ts";

/** Parses one command-line override (`key=value`, `+key=value`, `++key=value`, `~key`). */
export function parseOverride(input: string): Override {
  return guard(() => parseOverride_(input));
}

/** Resolves every interpolation of a raw tree (no composition, no overrides). */
export function resolveTree(root: ConfigMap, ctx: ResolveContext): ConfigMap {
  return guard(() => resolveTree_(root, ctx));
}

/** The `${eval:...}` evaluator: a safe subset of Python expressions. */
export function safeEval(input: unknown, budget?: Budget): Scalar {
  return guard(() => safeEval_(input, budget));
}

/** YAML text -> config value; errors name `file` and the line. */
export function parseYaml(text: string, file: string): ConfigValue {
  return guard(() => parseYaml_(text, file));
}

/** The resolved config as YAML (`based train ... --cfg`); parses back to the same object. */
export function toYaml(cfg: ConfigMap): string {
  return guard(() => toYaml_(cfg));
}
