/**
 * Typed reads from a resolved config. Each throws a one-line ConfigError that
 * names the key (and the closest existing key when it is missing); each takes
 * an optional default, used when the key is missing or null.
 */
import { ConfigError } from "./errors.ts";
import { allPaths, splitKey } from "./resolve.ts";
import {
  brief,
  closestKey,
  type Config,
  type ConfigMap,
  type ConfigValue,
  isMap,
  typeName,
} from "./util.ts";

const NO_DEFAULT = Symbol("no default");

function lookup(cfg: Config, key: string): { found: boolean; value?: ConfigValue } {
  let node: ConfigValue = cfg;
  for (const seg of splitKey(key)) {
    if (isMap(node) && Object.hasOwn(node, seg)) node = node[seg];
    else if (Array.isArray(node) && /^\d+$/.test(seg) && Number(seg) < node.length) {
      node = node[Number(seg)];
    } else return { found: false };
  }
  return { found: true, value: node };
}

function missing(cfg: Config, key: string): never {
  const best = closestKey(key, allPaths(cfg));
  throw new ConfigError(
    `missing config key '${key}'`,
    best ? `did you mean '${best}'?` : undefined,
  );
}

function read<T>(
  cfg: Config,
  key: string,
  def: T | typeof NO_DEFAULT,
  want: string,
  ok: (v: ConfigValue) => boolean,
): T {
  const r = lookup(cfg, key);
  if (!r.found || r.value === null) {
    if (def !== NO_DEFAULT) return def;
    if (!r.found) missing(cfg, key);
    throw new ConfigError(`config key '${key}' is null`, `it must be ${want}`);
  }
  if (!ok(r.value!)) {
    throw new ConfigError(
      `config key '${key}' must be ${want}, got ${brief(r.value)} (${typeName(r.value)})`,
    );
  }
  return r.value as T;
}

function arg<T>(args: T[]): T | typeof NO_DEFAULT {
  return args.length > 0 ? args[0] : NO_DEFAULT;
}

/** The value at a dotted key ("a.b.c", list items by index: "a.b.0"); any type. */
export function cfgGet<T = ConfigValue>(cfg: Config, key: string, ...def: [T?]): T {
  const r = lookup(cfg, key);
  if (!r.found) {
    if (def.length > 0) return def[0] as T;
    missing(cfg, key);
  }
  return r.value as T;
}

/** A finite number. */
export function cfgNum(cfg: Config, key: string, ...def: [number?]): number {
  return read(
    cfg,
    key,
    arg(def as number[]),
    "a number",
    (v) => typeof v === "number" && Number.isFinite(v),
  );
}

/** An integer. */
export function cfgInt(cfg: Config, key: string, ...def: [number?]): number {
  return read(
    cfg,
    key,
    arg(def as number[]),
    "an integer",
    (v) => typeof v === "number" && Number.isInteger(v),
  );
}

/** true or false. */
export function cfgBool(cfg: Config, key: string, ...def: [boolean?]): boolean {
  return read(cfg, key, arg(def as boolean[]), "true or false", (v) => typeof v === "boolean");
}

/** A string. */
export function cfgStr(cfg: Config, key: string, ...def: [string?]): string {
  return read(cfg, key, arg(def as string[]), "a string", (v) => typeof v === "string");
}

/** A list. */
export function cfgList<T = ConfigValue>(cfg: Config, key: string, ...def: [T[]?]): T[] {
  return read(cfg, key, arg(def as T[][]), "a list", (v) => Array.isArray(v));
}

/** A mapping. */
export function cfgMap(cfg: Config, key: string, ...def: [ConfigMap?]): ConfigMap {
  return read(cfg, key, arg(def as ConfigMap[]), "a mapping", (v) => isMap(v));
}
