/**
 * The Hydra 1.3 command-line override grammar, and applying `key=value`
 * overrides to a composed config in struct mode.
 *   key=value   set an existing key (dotted path; list items by index)
 *   +key=value  add a key that does not exist yet
 *   ++key=value add or override
 *   ~key, ~key=value   delete (the second form only if the value matches)
 * Values: `null`, `true`/`false` (any case), ints, floats (1e-3, inf, nan),
 * 'quoted' / "quoted" strings, [lists], {dicts}, interpolations `${...}`,
 * casts str(...) int(...) float(...) bool(...); anything else is a string.
 * A top-level comma is a sweep (multirun) and is refused.
 * Beyond Hydra (OmegaConf has no types for plain YAML): a plain `key=value`
 * must match the type of the value it replaces (see checkType).
 */
import { ConfigError } from "./errors.ts";
import { parsePrimitive, Resolver, splitKey } from "./resolve.ts";
import {
  brief,
  clip,
  closestKey,
  type ConfigMap,
  type ConfigValue,
  deepEqual,
  isMap,
  MAX_DEPTH,
  typeName,
} from "./util.ts";
import { allPaths } from "./resolve.ts";

export type OverrideKind = "set" | "add" | "force" | "delete";

export interface Override {
  input: string;
  kind: OverrideKind;
  /** key or config group, without prefix and without @package */
  key: string;
  /** `group@pkg` */
  package?: string;
  /** undefined only for `~key` without a value */
  value?: ConfigValue;
  /** the unquoted text of a scalar value (used when the target is a string) */
  raw?: string;
}

function fail(input: string, msg: string): never {
  throw new ConfigError(`malformed override '${clip(input)}': ${msg}`);
}

class ValueParser {
  i = 0;
  constructor(readonly s: string, readonly input: string) {}

  fail(msg: string): never {
    fail(this.input, msg);
  }

  ws(): void {
    while (this.i < this.s.length && /\s/.test(this.s[this.i])) this.i++;
  }

  /** Skips a `${...}` (balanced, quotes inside respected) and returns its text. */
  interp(): string {
    const start = this.i;
    let depth = 0;
    let q: string | null = null;
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (q) {
        if (c === "\\") this.i++;
        else if (c === q) q = null;
      } else if (c === "'" || c === '"') {
        if (depth > 0) q = c;
      } else if (c === "{") depth++;
      else if (c === "}") {
        depth--;
        if (depth === 0) {
          this.i++;
          return this.s.slice(start, this.i);
        }
      }
      this.i++;
    }
    this.fail("unterminated '${'");
  }

  quoted(): string {
    const q = this.s[this.i++];
    let out = "";
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined) this.fail(`missing closing ${q}`);
      if (c === "\\" && (this.s[this.i + 1] === q || this.s[this.i + 1] === "\\")) {
        out += this.s[this.i + 1];
        this.i += 2;
        continue;
      }
      if (c === q) {
        this.i++;
        return out;
      }
      out += c;
      this.i++;
    }
  }

  /** One element: stops before `,` `]` `}` (and `:` in a dict key) at depth 0. */
  element(depth: number, inContainer: boolean): { v: ConfigValue; raw?: string } {
    if (depth > MAX_DEPTH) this.fail("nested too deeply");
    this.ws();
    const c = this.s[this.i];
    if (c === "[") return { v: this.list(depth) };
    if (c === "{") return { v: this.dict(depth) };
    if (c === "'" || c === '"') {
      const v = this.quoted();
      this.ws();
      return { v };
    }
    const cast = /^(str|int|float|bool)\(/.exec(this.s.slice(this.i, this.i + 8));
    if (cast) {
      this.i += cast[0].length;
      const inner = this.element(depth + 1, true);
      this.ws();
      if (this.s[this.i] !== ")") this.fail(`missing ')' after ${cast[1]}(`);
      this.i++;
      this.ws();
      return { v: castValue(cast[1], inner.v, this.input) };
    }
    if (
      /^(choice|range|interval|glob|shuffle|sort|tag|extend_list)\(/.test(
        this.s.slice(this.i, this.i + 12),
      )
    ) {
      this.fail("sweeps and functions need multirun, which is not supported");
    }
    let text = "";
    for (;;) {
      const d = this.s[this.i];
      if (d === undefined) break;
      if (d === "$" && this.s[this.i + 1] === "{") {
        text += this.interp();
        continue;
      }
      if (d === "," || (inContainer && (d === "]" || d === "}" || d === ")"))) break;
      if (d === "[" || d === "]" || d === "{" || d === "}") {
        this.fail(`unexpected '${d}' (quote the value if it is a string)`);
      }
      if (d === "'" || d === '"') {
        this.fail(`unexpected ${d} inside a value (quote the whole value)`);
      }
      if (
        d === "\\" && this.s[this.i + 1] !== undefined &&
        /[,[\]{}()'" \\=:]/.test(this.s[this.i + 1])
      ) {
        text += this.s[this.i + 1];
        this.i += 2;
        continue;
      }
      text += d;
      this.i++;
    }
    const raw = text.trim();
    if (raw.includes("${")) return { v: raw, raw };
    return { v: parsePrimitive(raw), raw };
  }

  list(depth: number): ConfigValue[] {
    this.i++; // [
    const out: ConfigValue[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      this.ws();
      return out;
    }
    for (;;) {
      out.push(this.element(depth + 1, true).v);
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "]") {
        this.i++;
        this.ws();
        return out;
      }
      this.fail(c === undefined ? "missing ']'" : `unexpected '${c}' in a list`);
    }
  }

  dict(depth: number): ConfigMap {
    this.i++; // {
    const out: ConfigMap = {};
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      this.ws();
      return out;
    }
    for (;;) {
      this.ws();
      let key: string;
      if (this.s[this.i] === "'" || this.s[this.i] === '"') key = this.quoted();
      else {
        const m = /^[^:,{}[\]'"]*/.exec(this.s.slice(this.i))!;
        key = m[0].trim();
        this.i += m[0].length;
      }
      if (key === "") this.fail("empty key in a dict");
      this.ws();
      if (this.s[this.i] !== ":") this.fail(`expected ':' after '${key}' in a dict`);
      this.i++;
      out[key] = this.element(depth + 1, true).v;
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "}") {
        this.i++;
        this.ws();
        return out;
      }
      this.fail(c === undefined ? "missing '}'" : `unexpected '${c}' in a dict`);
    }
  }
}

function castValue(fn: string, v: ConfigValue, input: string): ConfigValue {
  if (Array.isArray(v)) return v.map((x) => castValue(fn, x, input));
  if (isMap(v)) {
    const out: ConfigMap = {};
    for (const [k, x] of Object.entries(v)) out[k] = castValue(fn, x, input);
    return out;
  }
  switch (fn) {
    case "str":
      return v === null ? "null" : typeof v === "string" ? v : String(v);
    case "bool":
      if (typeof v === "boolean") return v;
      if (typeof v === "number") return v !== 0;
      if (typeof v === "string" && /^(true|false)$/i.test(v)) return v.toLowerCase() === "true";
      return fail(input, `cannot cast ${brief(v)} to bool`);
    case "int": {
      const n = typeof v === "string" ? parsePrimitive(v) : v;
      if (typeof n === "boolean") return n ? 1 : 0;
      if (typeof n !== "number" || !Number.isFinite(n)) {
        fail(input, `cannot cast ${brief(v)} to int`);
      }
      return Math.trunc(n);
    }
    default: {
      const n = typeof v === "string" ? parsePrimitive(v) : v;
      if (typeof n === "boolean") return n ? 1 : 0;
      if (typeof n !== "number") fail(input, `cannot cast ${brief(v)} to float`);
      return n;
    }
  }
}

/** Parses one command-line override. */
export function parseOverride(input: string): Override {
  if (typeof input !== "string") {
    throw new ConfigError(`an override must be a string, got ${brief(input)}`);
  }
  if (input.length > 100_000) fail(input.slice(0, 40), "too long");
  let s = input;
  let kind: OverrideKind = "set";
  if (s.startsWith("++")) {
    kind = "force";
    s = s.slice(2);
  } else if (s.startsWith("+")) {
    kind = "add";
    s = s.slice(1);
  } else if (s.startsWith("~")) {
    kind = "delete";
    s = s.slice(1);
  }
  const eq = s.indexOf("=");
  const keyPart = (eq === -1 ? s : s.slice(0, eq)).trim();
  if (eq === -1 && kind !== "delete") {
    fail(input, `missing '=' (write ${keyPart || "key"}=value)`);
  }
  if (keyPart === "") fail(input, "empty key");
  const km = /^([A-Za-z0-9_\-/.\][]+?)(?:@([A-Za-z0-9_\-.]*))?$/.exec(keyPart);
  if (!km || /\.\.|^\.|\.$|^\/|\/\/|\/$/.test(km[1])) {
    fail(input, `invalid key '${keyPart}'`);
  }
  const out: Override = { input, kind, key: km[1] };
  if (km[2] !== undefined) out.package = km[2];
  if (eq === -1) return out;
  const text = s.slice(eq + 1);
  const p = new ValueParser(text, input);
  const { v, raw } = p.element(0, false);
  p.ws();
  if (p.i < text.length) {
    if (text[p.i] === ",") {
      fail(
        input,
        "a comma-separated value is a sweep (multirun), which is not supported; use [a,b] for a list",
      );
    }
    fail(input, `unexpected '${text[p.i]}'`);
  }
  out.value = v;
  if (raw !== undefined) out.raw = raw;
  return out;
}

/** Finds the container and last segment of `path`, optionally creating mappings (+/++). */
function locate(
  root: ConfigMap,
  path: string[],
  create: boolean,
  input: string,
): { parent: ConfigMap | ConfigValue[]; last: string } | undefined {
  let node: ConfigValue = root;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i];
    if (isMap(node)) {
      if (!Object.hasOwn(node, seg) || node[seg] === null) {
        if (!create) return undefined;
        node[seg] = {};
      }
      node = node[seg];
    } else if (Array.isArray(node)) {
      if (!/^\d+$/.test(seg) || Number(seg) >= node.length) return undefined;
      node = node[Number(seg)];
    } else {
      if (create) {
        throw new ConfigError(
          `cannot apply '${input}': '${path.slice(0, i).join(".")}' is a ${
            typeName(node)
          }, not a mapping`,
        );
      }
      return undefined;
    }
  }
  if (isMap(node) || Array.isArray(node)) return { parent: node, last: path[path.length - 1] };
  if (create) {
    throw new ConfigError(
      `cannot apply '${input}': '${path.slice(0, -1).join(".")}' is a ${
        typeName(node)
      }, not a mapping`,
    );
  }
  return undefined;
}

function getChild(
  parent: ConfigMap | ConfigValue[],
  last: string,
): { ok: boolean; v?: ConfigValue } {
  if (Array.isArray(parent)) {
    if (/^\d+$/.test(last) && Number(last) < parent.length) {
      return { ok: true, v: parent[Number(last)] };
    }
    return { ok: false };
  }
  return Object.hasOwn(parent, last) ? { ok: true, v: parent[last] } : { ok: false };
}

function setChild(
  parent: ConfigMap | ConfigValue[],
  last: string,
  v: ConfigValue,
  input: string,
): void {
  if (Array.isArray(parent)) {
    if (!/^\d+$/.test(last) || Number(last) >= parent.length) {
      throw new ConfigError(`cannot apply '${input}': list index ${last} is out of range`);
    }
    parent[Number(last)] = v;
  } else parent[last] = v;
}

function unknownKey(
  root: ConfigMap,
  key: string,
  input: string,
  groups: readonly string[] = [],
): never {
  const paths = allPaths(root);
  const best = closestKey(key, [...paths, ...groups]);
  let hint: string;
  if (best !== undefined && !paths.includes(best)) {
    hint = `did you mean the config group '${best}'?`;
  } else if (best !== undefined) hint = `did you mean '${best}'?`;
  else hint = `to add a new key use +${clip(input.replace(/^[+~]+/, ""))}`;
  throw new ConfigError(`unknown config key '${clip(key)}'`, hint);
}

/** Merges a mapping into another in struct mode: every key must exist already. */
function structMerge(
  dest: ConfigMap,
  src: ConfigMap,
  prefix: string,
  root: ConfigMap,
  input: string,
): void {
  for (const [k, v] of Object.entries(src)) {
    const key = `${prefix}.${k}`;
    if (!Object.hasOwn(dest, k)) unknownKey(root, key, input);
    const cur = dest[k];
    if (isMap(cur) && isMap(v)) structMerge(cur, v, key, root, input);
    else dest[k] = v;
  }
}

/** Merges a mapping into another, adding keys (force / add with a mapping). */
function openMerge(dest: ConfigMap, src: ConfigMap): void {
  for (const [k, v] of Object.entries(src)) {
    const cur = dest[k];
    if (isMap(cur) && isMap(v)) openMerge(cur, v);
    else dest[k] = v;
  }
}

/**
 * The value an override may write where `current` (the resolved old value)
 * is: the types must agree (int and float interchange; a string target takes
 * the text of any scalar); null and interpolations are always accepted.
 */
export function checkType(key: string, current: ConfigValue | undefined, o: Override): ConfigValue {
  const v = o.value!;
  if (v === null || current === undefined || current === null) return v;
  if (typeof v === "string" && v.includes("${")) return v;
  const want = typeName(current);
  const bad = (): never => {
    const article = /^[aeiou]/.test(want) ? "an" : "a";
    throw new ConfigError(
      `config key '${key}' expects ${article} ${want}, got ${brief(o.raw ?? v)}`,
      `from '${clip(o.input)}'`,
    );
  };
  switch (want) {
    case "int":
    case "float":
      return typeof v === "number" ? v : bad();
    case "bool":
      return typeof v === "boolean" ? v : bad();
    case "string":
      if (typeof v === "string") return v;
      if (typeof v === "number" || typeof v === "boolean") return o.raw ?? String(v);
      return bad();
    case "list":
      return Array.isArray(v) ? v : bad();
    default:
      return isMap(v) ? v : bad();
  }
}

/**
 * Applies config overrides (not group choices) to `root` in place, Hydra's
 * way: struct mode for `key=value`, `+` to add, `++` to force, `~` to delete.
 * `resolveCurrent` gives the resolved value at a path, for type checks.
 */
export function applyConfigOverrides(
  root: ConfigMap,
  overrides: Override[],
  resolveCurrent: (root: ConfigMap, path: string[]) => ConfigValue | undefined,
  groups: readonly string[] = [],
): void {
  for (const o of overrides) {
    if (o.package !== undefined) {
      throw new ConfigError(
        `override '${o.input}' looks like a config group override, but config group '${o.key}' does not exist`,
      );
    }
    const key = o.key;
    const path = splitKey(key);
    if (path.some((p) => p === "")) {
      throw new ConfigError(`malformed override '${o.input}': empty key segment`);
    }
    switch (o.kind) {
      case "delete": {
        const loc = locate(root, path, false, o.input);
        const cur = loc && getChild(loc.parent, loc.last);
        if (!loc || !cur?.ok) {
          throw new ConfigError(`cannot delete '${key}': no such key`, hintFor(root, key));
        }
        if (o.value !== undefined && o.raw !== "") {
          const now = resolveCurrent(root, path);
          if (!deepEqual(now, o.value) && !deepEqual(cur.v, o.value)) {
            throw new ConfigError(
              `cannot delete '${key}': its value is ${brief(now ?? cur.v)}, not ${brief(o.value)}`,
            );
          }
        }
        if (Array.isArray(loc.parent)) loc.parent.splice(Number(loc.last), 1);
        else delete loc.parent[loc.last];
        break;
      }
      case "add": {
        const loc = locate(root, path, true, o.input);
        if (!loc) throw new ConfigError(`cannot apply '${clip(o.input)}': no such list item`);
        const cur = getChild(loc.parent, loc.last);
        const v = o.value!;
        if (cur.ok && cur.v !== null && !(isMap(v) || Array.isArray(v))) {
          throw new ConfigError(
            `cannot add '${key}': it exists already`,
            `use ${o.input.slice(1)} to change it, or +${o.input} to add or change`,
          );
        }
        if (cur.ok && isMap(cur.v) && isMap(v)) openMerge(cur.v, v);
        else setChild(loc.parent, loc.last, v, o.input);
        break;
      }
      case "force": {
        const loc = locate(root, path, true, o.input);
        if (!loc) throw new ConfigError(`cannot apply '${clip(o.input)}': no such list item`);
        const cur = getChild(loc.parent, loc.last);
        const v = o.value!;
        if (cur.ok && isMap(cur.v) && isMap(v)) openMerge(cur.v, v);
        else setChild(loc.parent, loc.last, v, o.input);
        break;
      }
      default: {
        const loc = locate(root, path, false, o.input);
        const cur = loc && getChild(loc.parent, loc.last);
        if (!loc || !cur?.ok) unknownKey(root, key, o.input, groups);
        const resolved = resolveCurrent(root, path);
        const v = checkType(key, resolved, o);
        if (isMap(cur.v) && isMap(v)) structMerge(cur.v, v, key, root, o.input);
        else setChild(loc.parent, loc.last, v, o.input);
      }
    }
  }
}

function hintFor(root: ConfigMap, key: string): string | undefined {
  const best = closestKey(key, allPaths(root));
  return best ? `did you mean '${best}'?` : undefined;
}

/** The resolved value at `path` of a raw tree, or undefined when it cannot be resolved. */
export function tryResolve(
  root: ConfigMap,
  path: string[],
  ctx: ConstructorParameters<typeof Resolver>[1],
): ConfigValue | undefined {
  try {
    const r = new Resolver(root, ctx);
    if (!r.hasRaw(path)) return undefined;
    return r.resolvePath(path);
  } catch (e) {
    if (e instanceof ConfigError) return undefined;
    throw e;
  }
}
