/**
 * Small shared pieces of the config system: the value types, edit-distance
 * suggestions, Python-style `str()` (what OmegaConf writes when it splices a
 * value into a string), type names for messages and a work budget that bounds
 * every parser and the resolver.
 */
import { ConfigError } from "./errors.ts";

export type Scalar = string | number | boolean | null;
export type ConfigValue = Scalar | ConfigValue[] | ConfigMap;
export type ConfigMap = { [key: string]: ConfigValue };
/** A section of a config as its readers take it: a plain object of unknown values. */
export type Obj = Record<string, unknown>;
/** A composed and resolved config: nested records, arrays, numbers, strings, booleans, null. */
export type Config = ConfigMap;

export function isMap(v: unknown): v is ConfigMap {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Deep copy of a config value. */
export function clone<T extends ConfigValue>(v: T): T {
  if (Array.isArray(v)) return v.map((x) => clone(x)) as T;
  if (isMap(v)) {
    const out: ConfigMap = {};
    for (const [k, x] of Object.entries(v)) out[k] = clone(x);
    return out as T;
  }
  return v;
}

/** Structural equality of two config values (key order ignored). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a === "number" && typeof b === "number") return Number.isNaN(a) && Number.isNaN(b);
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isMap(a) && isMap(b)) {
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/** Levenshtein distance (insert, delete, substitute; cost 1 each). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    const ca = a.charCodeAt(i - 1);
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1] + (ca === b.charCodeAt(j - 1) ? 0 : 1);
      cur[j] = Math.min(sub, prev[j] + 1, cur[j - 1] + 1);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** Candidates sorted by edit distance to `key` (ties: shorter, then alphabetical). */
export function rankByDistance(key: string, candidates: Iterable<string>): string[] {
  const k = key.slice(0, 200);
  const scored = [...new Set(candidates)].map((c) => ({ c, d: editDistance(k, c.slice(0, 200)) }));
  scored.sort((x, y) =>
    x.d - y.d || x.c.length - y.c.length || (x.c < y.c ? -1 : x.c > y.c ? 1 : 0)
  );
  return scored.map((s) => s.c);
}

/**
 * The candidate closest to `key` by edit distance, or undefined when none is
 * close enough to be a plausible typo (distance at most max(2, 40% of the
 * key's length)).
 */
export function closestKey(key: string, candidates: Iterable<string>): string | undefined {
  const best = rankByDistance(key, candidates)[0];
  if (best === undefined) return undefined;
  const limit = Math.max(2, Math.floor(0.4 * Math.max(key.length, 1)));
  return editDistance(key.slice(0, 200), best.slice(0, 200)) <= limit ? best : undefined;
}

/** "int" | "float" | "bool" | "string" | "list" | "mapping" | "null" */
export function typeName(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "string") return "string";
  if (Array.isArray(v)) return "list";
  return "mapping";
}

/** A short, one-line rendering of a value for error messages. */
export function brief(v: unknown, max = 60): string {
  let s: string;
  if (typeof v === "string") s = `'${v}'`;
  else if (v === undefined) s = "nothing";
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  s = s.replace(/\s+/g, " ");
  return s.length > max ? s.slice(0, max - 3) + "..." : s;
}

/** `s` cut to at most `max` characters ("..." marks a cut). */
export function clip(s: string, max = 100): string {
  return s.length > max ? s.slice(0, max - 3) + "..." : s;
}

/** Python's repr() of a float, given as a JS number (shortest round-trip digits). */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, expStr] = x.toExponential().split("e");
  const exp = Number(expStr);
  const neg = mant.startsWith("-");
  const digits = mant.replace("-", "").replace(".", "");
  let body: string;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
      const frac = digits.slice(exp + 1);
      body = `${intPart}.${frac || "0"}`;
    } else {
      body = `0.${"0".repeat(-exp - 1)}${digits}`;
    }
  } else {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp);
    body = `${m}e${exp < 0 ? "-" : "+"}${e < 10 ? "0" + e : e}`;
  }
  return neg ? "-" + body : body;
}

function pyNumber(x: number): string {
  if (Number.isInteger(x)) return Math.abs(x) < 1e21 ? String(x) : BigInt(x).toString();
  return pyFloatRepr(x);
}

function pyRepr(v: ConfigValue): string {
  if (typeof v === "string") return `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  return pyStr(v);
}

/** Python's str() of a config value: what OmegaConf splices into "a${b}c". */
export function pyStr(v: ConfigValue): string {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return pyNumber(v);
  if (typeof v === "string") return v;
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
}

/**
 * A bound on the work of one composition: parsers and the resolver charge it,
 * so that no input (however adversarial) makes them run away. Strings built
 * by interpolation are bounded in length too.
 */
export class Budget {
  steps = 0;
  constructor(readonly maxSteps = 2_000_000, readonly maxString = 1_000_000) {}
  charge(n = 1): void {
    this.steps += n;
    if (this.steps > this.maxSteps) {
      throw new ConfigError(
        "config is too complex to resolve",
        `more than ${this.maxSteps} steps; look for interpolations that expand without bound`,
      );
    }
  }
  checkString(s: string, where: string): string {
    if (s.length > this.maxString) {
      throw new ConfigError(
        `interpolation result for '${where}' is too long (${s.length} characters)`,
        `at most ${this.maxString}`,
      );
    }
    this.charge(1 + (s.length >> 10));
    return s;
  }
}

/** Most nested brackets, parentheses or interpolations any parser accepts. */
export const MAX_DEPTH = 64;

/** Dotted display of a key path ("model.config.alt_mixer_layers.0"). */
export function showPath(path: readonly string[]): string {
  return path.length === 0 ? "<root>" : path.join(".");
}

/** A message on one line: control characters escaped. */
export function oneLine(s: string): string {
  return s.replace(/[\n\r\t\v\f\u2028\u2029]/g, (c) => JSON.stringify(c).slice(1, -1));
}

/**
 * Runs `fn` under the module's contract: every failure leaves as a one-line
 * ConfigError (a stack overflow or a bug included, the latter marked
 * "internal error").
 */
export function guard<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConfigError) {
      if (/[\n\r\t\v\f\u2028\u2029]/.test(e.message)) throw new ConfigError(oneLine(e.message));
      throw e;
    }
    if (e instanceof RangeError) {
      throw new ConfigError("config is nested too deeply or recursive", oneLine(e.message));
    }
    const msg = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`internal error in the config system: ${oneLine(msg)}`);
  }
}
