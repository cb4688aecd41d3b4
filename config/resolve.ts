/**
 * Resolution of interpolations over a whole config tree (OmegaConf semantics,
 * eager instead of lazy): absolute `${a.b}`, relative `${.x}` / `${..x}`,
 * string splicing with Python str(), and the resolvers the reference
 * registers or uses: eval (safe, see safe_eval.ts), div_up, oc.env,
 * oc.select, hydra, now. Every node is resolved once (memoised); a node met
 * again while it is being resolved is a cycle. The work is bounded (Budget).
 */
import { ConfigError } from "./errors.ts";
import { type Arg, hasInterpolation, type Interp, parseTemplate, type Seg } from "./interp.ts";
import { safeEval } from "./safe_eval.ts";
import {
  brief,
  Budget,
  clone,
  closestKey,
  type ConfigMap,
  type ConfigValue,
  isMap,
  MAX_DEPTH,
  pyStr,
  showPath,
} from "./util.ts";

export interface ResolveContext {
  /** `${hydra:runtime.cwd}` */
  cwd: string;
  /** `${oc.env:...}` */
  env: Record<string, string | undefined>;
  /** `${now:...}` (one instant per composition, as Hydra caches it) */
  now: Date;
  /** `${hydra:runtime.choices.GROUP}` */
  choices?: Record<string, ConfigValue>;
  budget?: Budget;
}

export const RESOLVERS = ["eval", "div_up", "oc.env", "oc.select", "hydra", "now"];

/** "a.b[0].c" -> ["a", "b", "0", "c"] */
export function splitKey(key: string): string[] {
  const out: string[] = [];
  for (const part of key.split(".")) {
    const m = /^([^[\]]*)((?:\[[^[\]]*\])*)$/.exec(part);
    if (!m) {
      out.push(part);
      continue;
    }
    if (m[1] !== "" || m[2] === "") out.push(m[1]);
    for (const b of m[2].matchAll(/\[([^[\]]*)\]/g)) out.push(b[1]);
  }
  return out;
}

/** Every key path of a tree ("a", "a.b", ...), for suggestions. */
export function allPaths(tree: ConfigValue, limit = 20000): string[] {
  const out: string[] = [];
  const walk = (v: ConfigValue, prefix: string, depth: number) => {
    if (out.length >= limit || depth > MAX_DEPTH) return;
    if (isMap(v)) {
      for (const [k, x] of Object.entries(v)) {
        const p = prefix ? `${prefix}.${k}` : k;
        out.push(p);
        walk(x, p, depth + 1);
      }
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => {
        const p = prefix ? `${prefix}.${i}` : String(i);
        out.push(p);
        walk(x, p, depth + 1);
      });
    }
  };
  walk(tree, "", 0);
  return out;
}

function child(node: ConfigValue, seg: string): { ok: boolean; v?: ConfigValue } {
  if (isMap(node)) return Object.hasOwn(node, seg) ? { ok: true, v: node[seg] } : { ok: false };
  if (Array.isArray(node) && /^\d+$/.test(seg) && Number(seg) < node.length) {
    return { ok: true, v: node[Number(seg)] };
  }
  return { ok: false };
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

/** Python's datetime.strftime for the common directives (local time). */
export function strftime(d: Date, pattern: string): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  const start = new Date(d.getFullYear(), 0, 1);
  const yday = Math.floor((d.getTime() - start.getTime()) / 86400000) + 1;
  const h12 = d.getHours() % 12 === 0 ? 12 : d.getHours() % 12;
  const map: Record<string, () => string> = {
    Y: () => String(d.getFullYear()),
    y: () => p2(d.getFullYear() % 100),
    m: () => p2(d.getMonth() + 1),
    d: () => p2(d.getDate()),
    H: () => p2(d.getHours()),
    I: () => p2(h12),
    M: () => p2(d.getMinutes()),
    S: () => p2(d.getSeconds()),
    f: () => String(d.getMilliseconds() * 1000).padStart(6, "0"),
    j: () => String(yday).padStart(3, "0"),
    p: () => (d.getHours() < 12 ? "AM" : "PM"),
    a: () => DAYS[d.getDay()].slice(0, 3),
    A: () => DAYS[d.getDay()],
    b: () => MONTHS[d.getMonth()].slice(0, 3),
    B: () => MONTHS[d.getMonth()],
    w: () => String(d.getDay()),
    s: () => String(Math.floor(d.getTime() / 1000)),
    "%": () => "%",
  };
  return pattern.replace(/%(.)/g, (all, c: string) => (map[c] ? map[c]() : all));
}

export class Resolver {
  readonly budget: Budget;
  #memo = new Map<string, ConfigValue>();
  #active = new Set<string>();
  #stack: string[][] = [];
  #paths?: string[];

  constructor(readonly root: ConfigMap, readonly ctx: ResolveContext) {
    this.budget = ctx.budget ?? new Budget();
  }

  /** The whole tree, resolved (a new object; the input is not modified). */
  resolveAll(): ConfigMap {
    return this.resolvePath([]) as ConfigMap;
  }

  /** Whether a raw node exists at `path` (no interpolation is followed). */
  hasRaw(path: readonly string[]): boolean {
    let node: ConfigValue = this.root;
    for (const seg of path) {
      const c = child(node, seg);
      if (!c.ok) return false;
      node = c.v!;
    }
    return true;
  }

  #rawAt(path: readonly string[]): ConfigValue {
    let node: ConfigValue = this.root;
    for (const seg of path) node = child(node, seg).v!;
    return node;
  }

  #suggest(path: readonly string[]): string {
    this.#paths ??= allPaths(this.root);
    const best = closestKey(path.join("."), this.#paths);
    return best ? `did you mean '${best}'?` : "no such key";
  }

  /** The fully resolved value of the node at `path` (which must exist). */
  resolvePath(path: readonly string[]): ConfigValue {
    const key = path.join("\u0001");
    if (this.#memo.has(key)) return this.#memo.get(key)!;
    if (this.#active.has(key)) {
      const i = this.#stack.findIndex((p) => p.join("\u0001") === key);
      const chain = this.#stack.slice(i).filter((p, j) => {
        if (j === 0) return true;
        const raw = this.#rawAt(p);
        return typeof raw === "string";
      }).map(showPath);
      throw new ConfigError(`interpolation cycle: ${[...chain, showPath(path)].join(" -> ")}`);
    }
    if (this.#stack.length > 300 || path.length > MAX_DEPTH) {
      throw new ConfigError(
        `interpolation chain too deep at '${showPath(path)}'`,
        "more than 300 nested references",
      );
    }
    this.budget.charge();
    const raw = this.#rawAt(path);
    this.#active.add(key);
    this.#stack.push([...path]);
    let v: ConfigValue;
    try {
      if (typeof raw === "string") {
        if (raw === "???") {
          throw new ConfigError(
            `config key '${showPath(path)}' is mandatory ('???') and has no value`,
            `set it: ${showPath(path)}=...`,
          );
        }
        v = hasInterpolation(raw) ? this.#template(parseTemplate(raw, showPath(path)), path) : raw;
      } else if (Array.isArray(raw)) {
        v = raw.map((_, i) => this.resolvePath([...path, String(i)]));
      } else if (isMap(raw)) {
        const out: ConfigMap = {};
        for (const k of Object.keys(raw)) out[k] = this.resolvePath([...path, k]);
        v = out;
      } else {
        v = raw;
      }
    } finally {
      this.#active.delete(key);
      this.#stack.pop();
    }
    this.#memo.set(key, v);
    return v;
  }

  /** Looks a key up from the root, following interpolated prefixes. */
  #lookup(path: readonly string[]): { ok: boolean; v?: ConfigValue } {
    let node: ConfigValue = this.root;
    for (let i = 0; i < path.length; i++) {
      if (i > 0 && typeof node === "string" && hasInterpolation(node)) {
        let v: ConfigValue = this.resolvePath(path.slice(0, i));
        for (const seg of path.slice(i)) {
          const c = child(v, seg);
          if (!c.ok) return { ok: false };
          v = c.v!;
        }
        return { ok: true, v };
      }
      const c = child(node, path[i]);
      if (!c.ok) return { ok: false };
      node = c.v!;
    }
    return { ok: true, v: this.resolvePath(path) };
  }

  /** Absolute path of a key written relative to the node at `at` with `up` dots. */
  #target(at: readonly string[], up: number, key: string, text: string): string[] {
    const keyPath = key === "" ? [] : splitKey(key);
    if (up === 0) return keyPath;
    const container = at.slice(0, -1);
    const climb = up - 1;
    if (climb > container.length) {
      throw new ConfigError(
        `interpolation '${text}' at '${showPath(at)}' climbs above the root`,
        `'${showPath(at)}' is only ${container.length} level(s) deep`,
      );
    }
    return [...container.slice(0, container.length - climb), ...keyPath];
  }

  #template(segs: Seg[], at: readonly string[]): ConfigValue {
    if (segs.length === 1 && typeof segs[0] !== "string") {
      const v = this.#interp(segs[0], at);
      return v !== null && typeof v === "object" ? clone(v) : v;
    }
    let out = "";
    for (const s of segs) {
      out += typeof s === "string" ? s : pyStr(this.#interp(s, at));
      this.budget.checkString(out, showPath(at));
    }
    return out;
  }

  #interp(it: Interp, at: readonly string[]): ConfigValue {
    this.budget.charge();
    if (it.kind === "ref") {
      const key = it.key.map((s) => (typeof s === "string" ? s : pyStr(this.#interp(s, at)))).join(
        "",
      );
      const path = this.#target(at, it.up, key, it.text);
      if (path.length === 0) {
        throw new ConfigError(`interpolation '${it.text}' at '${showPath(at)}' refers to the root`);
      }
      const r = this.#lookup(path);
      if (!r.ok) {
        throw new ConfigError(
          `interpolation '${it.text}' at '${showPath(at)}': key '${showPath(path)}' not found`,
          this.#suggest(path),
        );
      }
      return r.v!;
    }
    const args = it.args.map((a) => this.#arg(a, at));
    return this.#call(it, args, at);
  }

  #arg(a: Arg, at: readonly string[]): ConfigValue {
    switch (a.kind) {
      case "quoted": {
        let out = "";
        for (const s of a.segs) out += typeof s === "string" ? s : pyStr(this.#interp(s, at));
        return this.budget.checkString(out, showPath(at));
      }
      case "list":
        return a.items.map((x) => this.#arg(x, at));
      case "dict": {
        const out: ConfigMap = {};
        for (const [k, x] of a.entries) out[k] = this.#arg(x, at);
        return out;
      }
      default: {
        if (a.segs.length === 0) return "";
        if (a.segs.length === 1) {
          const s = a.segs[0];
          if (typeof s !== "string") return this.#interp(s, at);
          return parsePrimitive(s);
        }
        let out = "";
        for (const s of a.segs) out += typeof s === "string" ? s : pyStr(this.#interp(s, at));
        return this.budget.checkString(out, showPath(at));
      }
    }
  }

  #call(
    it: Interp & { kind: "resolver" },
    args: ConfigValue[],
    at: readonly string[],
  ): ConfigValue {
    const where = `'${it.text.length > 60 ? it.text.slice(0, 57) + "..." : it.text}' at '${
      showPath(at)
    }'`;
    const nargs = (lo: number, hi: number) => {
      if (args.length < lo || args.length > hi) {
        throw new ConfigError(
          `resolver ${it.name} takes ${
            lo === hi ? lo : `${lo} or ${hi}`
          } argument(s), got ${args.length}`,
          `in ${where}`,
        );
      }
    };
    switch (it.name) {
      case "eval": {
        if (args.length !== 1) {
          throw new ConfigError(
            `eval takes one expression, got ${args.length} arguments`,
            `quote an expression that contains commas, in ${where}`,
          );
        }
        try {
          return safeEval(args[0], this.budget);
        } catch (e) {
          if (e instanceof ConfigError) throw new ConfigError(`${e.message} (in ${where})`);
          throw e;
        }
      }
      case "div_up": {
        nargs(2, 2);
        const [x, y] = args;
        if (typeof x !== "number" || typeof y !== "number") {
          throw new ConfigError(
            `div_up needs two numbers, got ${brief(x)} and ${brief(y)}`,
            `in ${where}`,
          );
        }
        if (y === 0) throw new ConfigError(`div_up: division by zero`, `in ${where}`);
        return Math.floor((x + y - 1) / y);
      }
      case "oc.env": {
        nargs(1, 2);
        const name = pyStr(args[0]);
        const v = this.ctx.env[name];
        if (v !== undefined) return v;
        if (args.length === 2) {
          const d = args[1];
          return d === null || typeof d === "string" ? d : pyStr(d);
        }
        throw new ConfigError(`environment variable '${name}' is not set`, `needed by ${where}`);
      }
      case "oc.select": {
        nargs(1, 2);
        const text = pyStr(args[0]);
        const m = /^(\.*)(.*)$/.exec(text)!;
        const path = this.#target(at, m[1].length, m[2], it.text);
        const r = path.length ? this.#lookupSafe(path) : { ok: false };
        if (r.ok && r.v !== "???") return r.v!;
        return args.length === 2 ? args[1] : null;
      }
      case "hydra": {
        nargs(1, 1);
        const key = pyStr(args[0]);
        if (key === "runtime.cwd") return this.ctx.cwd;
        if (key === "job.name") return "run";
        if (key === "job.num") return 0;
        if (key === "runtime.version") return "1.3.2";
        if (key.startsWith("runtime.choices.")) {
          const g = key.slice("runtime.choices.".length);
          const c = this.ctx.choices ?? {};
          if (Object.hasOwn(c, g)) return clone(c[g]);
          throw new ConfigError(`hydra:${key}: no config group '${g}' was chosen`, `in ${where}`);
        }
        throw new ConfigError(
          `unsupported hydra key '${key}'`,
          `supported: runtime.cwd, runtime.choices.GROUP, job.name, job.num, runtime.version`,
        );
      }
      case "now": {
        nargs(1, 1);
        return strftime(this.ctx.now, pyStr(args[0]));
      }
      default:
        throw new ConfigError(
          `unsupported resolver '${it.name}' in ${where}`,
          `supported: ${RESOLVERS.join(", ")}`,
        );
    }
  }

  #lookupSafe(path: readonly string[]): { ok: boolean; v?: ConfigValue } {
    return this.#lookup(path);
  }
}

/** Typing of an unquoted scalar as in the override grammar / YAML 1.2 core schema. */
export function parsePrimitive(text: string): ConfigValue {
  const t = text.trim();
  if (/^null$/i.test(t)) return null;
  if (/^true$/i.test(t)) return true;
  if (/^false$/i.test(t)) return false;
  if (/^[+-]?(0|[1-9](_?\d)*)$/.test(t)) return Number(t.replace(/_/g, ""));
  if (
    /^[+-]?((\d(_?\d)*)?\.\d(_?\d)*|\d(_?\d)*\.)([eE][+-]?\d(_?\d)*)?$/.test(t) ||
    /^[+-]?\d(_?\d)*[eE][+-]?\d(_?\d)*$/.test(t)
  ) {
    return Number(t.replace(/_/g, ""));
  }
  if (/^[+-]?(inf|\.inf)$/i.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
  if (/^(nan|\.nan)$/i.test(t)) return NaN;
  return t;
}

/** Resolves every interpolation of a tree. */
export function resolveTree(root: ConfigMap, ctx: ResolveContext): ConfigMap {
  return new Resolver(root, ctx).resolveAll();
}
