/**
 * Shared CLI plumbing: the number parsers every command's options use (each
 * rejects a bad value with a one-line usage error naming the option), the
 * one-line usage-error format, and composing the config from the command line.
 */
import { type Command, InvalidArgumentError } from "commander";
import { type Config, dirSource } from "../config/mod.ts";
import { composeConfig } from "../configs/mod.ts";

/** An option parser for commander: text -> value, or InvalidArgumentError. */
export type Parser<T> = (text: string) => T;

function number(text: string, integer: boolean): number {
  const t = text.trim();
  // Number("") is 0 and Number("0x10") 16: accept plain decimal notation only
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) {
    throw new InvalidArgumentError(`expected ${integer ? "an integer" : "a number"}`);
  }
  const v = Number(t);
  if (!Number.isFinite(v)) throw new InvalidArgumentError("expected a finite number");
  if (integer && !Number.isInteger(v)) throw new InvalidArgumentError("expected an integer");
  return v;
}

/** An integer ≥ `min`. */
export function int(min: number): Parser<number> {
  return (text) => {
    const v = number(text, true);
    if (v < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    return v;
  };
}

/** A number in a range: `lo` (inclusive unless `loOpen`) to `hi` (inclusive). */
export function num(lo: number, hi = Infinity, loOpen = false): Parser<number> {
  return (text) => {
    const v = number(text, false);
    if (loOpen ? v <= lo : v < lo) {
      throw new InvalidArgumentError(`expected a number ${loOpen ? ">" : "≥"} ${lo}`);
    }
    if (v > hi) throw new InvalidArgumentError(`expected a number ≤ ${hi}`);
    return v;
  };
}

/** A comma-separated list of integers ≥ `min`. */
export function intList(min: number): Parser<number[]> {
  const one = int(min);
  return (text) => {
    const parts = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
    if (!parts.length) {
      throw new InvalidArgumentError(`expected integers ≥ ${min}, comma-separated`);
    }
    return parts.map((p) => {
      try {
        return one(p);
      } catch {
        throw new InvalidArgumentError(`expected integers ≥ ${min}, comma-separated ('${p}')`);
      }
    });
  };
}

/** A comma-separated subset of `allowed` (at least one). */
export function choices(allowed: readonly string[]): Parser<string[]> {
  return (text) => {
    const parts = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
    const bad = parts.filter((p) => !allowed.includes(p));
    if (!parts.length || bad.length) {
      throw new InvalidArgumentError(
        `expected a comma-separated subset of ${allowed.join(", ")}${
          bad.length ? ` ('${bad[0]}' is not one)` : ""
        }`,
      );
    }
    return [...new Set(parts)];
  };
}

/** One of `allowed`. */
export function oneOf(allowed: readonly string[]): Parser<string> {
  return (text) => {
    const t = text.trim();
    if (!allowed.includes(t)) {
      throw new InvalidArgumentError(`expected one of ${allowed.join(", ")}`);
    }
    return t;
  };
}

/** trainer.precision's values (train/amp.ts), for --precision options. */
export const PRECISIONS = ["32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed"] as const;

/**
 * A subcommand whose usage errors are one line pointing to its --help:
 * `error: unknown option '--x' (see 'based eval --help')`.
 */
export function subcommand(program: Command, name: string): Command {
  return program.command(name).configureOutput(oneLineErrors(`based ${name}`));
}

/** commander's error output as one line (its suggestions folded in) and a --help pointer. */
export function oneLineErrors(
  cmd: string,
): { outputError: (s: string, w: (s: string) => void) => void } {
  return {
    outputError: (s, write) =>
      write(`${s.trim().replace(/\s*\n\s*/g, " ")} (see '${cmd} --help')\n`),
  };
}

/** The config composed from `key=value` overrides (and a --config-dir searched first). */
export async function loadConfig(
  overrides: string[],
  configDir?: string,
  requireGroups?: string[],
): Promise<Config> {
  const sources = configDir ? [await dirSource(configDir)] : [];
  return composeConfig(overrides, {
    extraSources: sources,
    cwd: Deno.cwd(),
    env: Deno.env.toObject(),
    requireGroups,
  });
}
