/** Shared helpers of the config tests: composition with a fixed cwd, env and clock. */
import { throws } from "node:assert/strict";
import { type Config, type ConfigSource, mapSource } from "../../config/mod.ts";
import { composeConfig, type RunComposeOptions } from "../../configs/mod.ts";
import { BasedError } from "../../errors.ts";

export const CWD = "/launch";
export const NOW = new Date(2024, 1, 20, 13, 5, 9);

export function compose(overrides: string[], opts: RunComposeOptions = {}): Config {
  return composeConfig(overrides, { cwd: CWD, env: {}, now: NOW, ...opts });
}

/** Composition from an in-memory tree only (no bundle). */
export function composeFrom(
  files: Record<string, string>,
  overrides: string[] = [],
  opts: RunComposeOptions = {},
): Config {
  const src: ConfigSource = mapSource(files, "test", "test/");
  return composeConfig(overrides, { cwd: CWD, env: {}, now: NOW, sources: [src], ...opts });
}

/** Asserts that fn throws a BasedError whose message matches `re`; returns the message. */
export function throwsBased(fn: () => unknown, re: RegExp): string {
  let msg = "";
  throws(fn, (e: unknown) => {
    if (!(e instanceof BasedError)) throw new Error(`expected a BasedError, got ${e}`);
    msg = e.message;
    if (!re.test(e.message)) {
      throw new Error(`message ${JSON.stringify(e.message)} does not match ${re}`);
    }
    if (e.message.includes("\n")) {
      throw new Error(`message is not one line: ${JSON.stringify(e.message)}`);
    }
    return true;
  });
  return msg;
}

/** The value at a dotted path of a plain object. */
export function at(cfg: unknown, path: string): unknown {
  let v: unknown = cfg;
  for (const k of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}
