/**
 * Composition with Hydra 1.3 semantics (hydra/_internal/defaults_list.py):
 * the defaults tree (groups, `_self_`, `override`, `optional`, option lists,
 * `@package` and `# @package` headers, first-registration-wins overrides with
 * the command line registered first and the root's entries expanded last to
 * first), then OmegaConf merges in tree order, command-line `key=value`
 * overrides in struct mode, removal of `__`-prefixed keys (train/run.py) and
 * resolution of every interpolation.
 * Not modelled: Hydra's own `hydra/...` groups (ignored when they appear in a
 * defaults list), interpolations inside defaults lists, multirun/sweeps.
 */
import { ConfigError } from "./errors.ts";
import { applyConfigOverrides, type Override, parseOverride, tryResolve } from "./overrides.ts";
import { type ResolveContext, resolveTree } from "./resolve.ts";
import type { ConfigSource } from "./source.ts";
import {
  brief,
  Budget,
  clone,
  type Config,
  type ConfigMap,
  type ConfigValue,
  guard,
  isMap,
  rankByDistance,
} from "./util.ts";
import { parseConfigFile, type ParsedFile } from "./yaml_io.ts";

export interface ComposeOptions {
  /** where configs come from, searched in order (a program's built-in tree last) */
  sources: ConfigSource[];
  /** searched before `sources` (e.g. `--config-dir`): overrides or extends them */
  extraSources?: ConfigSource[];
  /** `${hydra:runtime.cwd}` (default: Deno.cwd()) */
  cwd?: string;
  /** `${oc.env:...}` (default: the process environment) */
  env?: Record<string, string | undefined>;
  /** `${now:...}` (default: now) */
  now?: Date;
  /** the primary config (default "config") */
  configName?: string;
  /**
   * config groups that must have a choice, e.g. ["experiment"] (the reference
   * requires none; a CLI may want to refuse a run without an experiment)
   */
  requireGroups?: string[];
}

// ---------------------------------------------------------------- repository

const parseCache = new WeakMap<ConfigSource, Map<string, ParsedFile>>();

function stripExt(p: string): string {
  return p.replace(/\.ya?ml$/, "");
}

class Repo {
  #dirs?: Set<string>;
  constructor(readonly sources: ConfigSource[]) {}

  #find(configPath: string): { src: ConfigSource; file: string } | undefined {
    const p = stripExt(configPath);
    for (const src of this.sources) {
      for (const ext of [".yaml", ".yml"]) {
        if (src.files.has(p + ext)) return { src, file: p + ext };
      }
    }
    return undefined;
  }

  exists(configPath: string): boolean {
    return this.#find(configPath) !== undefined;
  }

  load(configPath: string): ParsedFile | undefined {
    const hit = this.#find(configPath);
    if (!hit) return undefined;
    let cache = parseCache.get(hit.src);
    if (!cache) parseCache.set(hit.src, cache = new Map());
    let parsed = cache.get(hit.file);
    if (!parsed) {
      parsed = parseConfigFile(hit.src.files.get(hit.file)!, hit.src.display + hit.file);
      cache.set(hit.file, parsed);
    }
    return parsed;
  }

  displayName(configPath: string): string {
    const hit = this.#find(configPath);
    return hit ? hit.src.display + hit.file : configPath;
  }

  groupExists(group: string): boolean {
    if (!this.#dirs) {
      this.#dirs = new Set();
      for (const src of this.sources) {
        for (const f of src.files.keys()) {
          const parts = f.split("/");
          for (let i = 1; i < parts.length; i++) this.#dirs.add(parts.slice(0, i).join("/"));
        }
      }
    }
    return this.#dirs.has(group.replace(/^\/+|\/+$/g, ""));
  }

  /** Options of a group: every config under it (nested ones as "sub/name"). */
  options(group: string): string[] {
    const g = group.replace(/^\/+|\/+$/g, "");
    const out = new Set<string>();
    for (const src of this.sources) {
      for (const f of src.files.keys()) {
        if (f.startsWith(g + "/") && /\.ya?ml$/.test(f)) out.add(stripExt(f.slice(g.length + 1)));
      }
    }
    return [...out].sort();
  }

  allConfigs(): string[] {
    const out = new Set<string>();
    for (const src of this.sources) {
      for (const f of src.files.keys()) if (/\.ya?ml$/.test(f)) out.add(stripExt(f));
    }
    return [...out].sort();
  }

  groups(): string[] {
    this.groupExists("");
    return [...this.#dirs!].sort();
  }
}

// ------------------------------------------------------------ defaults tree

interface Def {
  kind: "group" | "config";
  group?: string;
  value?: string | string[] | null;
  path?: string;
  self?: boolean;
  package?: string;
  optional: boolean;
  override: boolean;
  externalAppend: boolean;
  primary: boolean;
  parentBaseDir?: string;
  parentPackage?: string;
  packageHeader?: string;
  deleted?: boolean;
}

interface Tree {
  node: Def;
  parent?: Tree;
  children?: (Tree | Def)[];
}

function isDef(x: Tree | Def): x is Def {
  return "kind" in x;
}

function groupPath(d: Def): string {
  const base = d.parentBaseDir ?? "";
  if (d.kind === "group") {
    const abs = d.group!.startsWith("/") || d.externalAppend;
    const g = d.group!.replace(/^\//, "");
    return base === "" || abs ? g : `${base}/${g}`;
  }
  const abs = d.path!.startsWith("/");
  const p = d.path!.replace(/^\//, "");
  const i = p.lastIndexOf("/");
  const g = i === -1 ? "" : p.slice(0, i);
  if (abs) return g;
  if (base === "") return g;
  return g === "" ? base : `${base}/${g}`;
}

function nameOf(d: Def): string | null {
  if (d.kind === "group") return typeof d.value === "string" ? d.value : null;
  const i = d.path!.lastIndexOf("/");
  return i === -1 ? d.path! : d.path!.slice(i + 1);
}

function configPath(d: Def): string {
  if (d.kind === "group") return `${groupPath(d)}/${nameOf(d)}`;
  const abs = d.path!.startsWith("/");
  const p = d.path!.replace(/^\//, "");
  const base = d.parentBaseDir ?? "";
  return abs || base === "" ? p : `${base}/${p}`;
}

function relGroupPath(d: Def): string {
  if (d.kind === "group") return d.group!.replace(/^\//, "");
  const p = d.path!.replace(/^\//, "");
  const i = p.lastIndexOf("/");
  return i === -1 ? "" : p.slice(0, i);
}

function finalPackage(d: Def, useHeader = true): string {
  const parentPkg = d.kind === "group" && d.externalAppend ? "" : d.parentPackage ?? "";
  let pkg = d.package === undefined && useHeader ? d.packageHeader : d.package;
  if (pkg === undefined) pkg = relGroupPath(d).replace(/\//g, ".");
  const name = d.kind === "group" && Array.isArray(d.value) ? null : nameOf(d);
  if (name !== null) pkg = pkg.split("_name_").join(name);
  const ret = parentPkg === "" ? pkg : pkg === "" ? parentPkg : `${parentPkg}.${pkg}`;
  const i = ret.lastIndexOf("_global_");
  return i === -1 ? ret : ret.slice(i + "_global_".length + 1);
}

function overrideKey(d: Def): string {
  const gp = groupPath(d);
  const def = gp.replace(/\//g, ".");
  const fin = finalPackage(d, false);
  return def !== fin ? `${gp}@${fin === "" ? "_global_" : fin}` : gp;
}

function setParent(d: Def, baseDir: string, pkg: string): void {
  d.parentBaseDir = baseDir;
  d.parentPackage = pkg;
  if (d.package !== undefined && d.package.includes("_group_")) {
    d.package = `_global_.${d.package.split("_group_").join(groupPath(d).replace(/\//g, "."))}`;
  }
}

function setPackageHeader(d: Def, header: string | undefined): void {
  if (header === undefined || header === "_group_") return;
  let h = header;
  if (h !== "_global_" && !h.startsWith("_global_.")) h = h === "" ? "_global_" : `_global_.${h}`;
  d.packageHeader = h.split("_group_").join(groupPath(d).replace(/\//g, "."));
}

function isHydraGroup(d: Def): boolean {
  if (d.kind !== "group") return false;
  const g = relGroupPath(d);
  return g === "hydra" || g.startsWith("hydra/");
}

function describeDef(d: Def): string {
  if (d.kind === "config") return d.path!;
  const v = Array.isArray(d.value) ? `[${d.value.join(", ")}]` : String(d.value);
  return `${d.override ? "override " : ""}${d.group}: ${v}`;
}

/** One entry of a `defaults` list, as written. */
function parseEntry(e: unknown, file: string): Def {
  const base = { optional: false, override: false, externalAppend: false, primary: false };
  const bad = (why: string): never => {
    throw new ConfigError(`${file}: invalid defaults entry ${brief(e)}: ${why}`);
  };
  if (typeof e === "string") {
    const s = e.trim();
    if (s === "_self_") return { ...base, kind: "config", path: "_self_", self: true };
    if (s === "" || /\s/.test(s)) bad("expected a config path or 'group: option'");
    const at = s.indexOf("@");
    const path = stripExt(at === -1 ? s : s.slice(0, at));
    const d: Def = { ...base, kind: "config", path };
    if (at !== -1) d.package = s.slice(at + 1) === "_here_" ? "" : s.slice(at + 1);
    return d;
  }
  if (isMap(e) && Object.keys(e).length === 1) {
    const [k, v] = Object.entries(e)[0];
    const words = k.trim().split(/\s+/);
    const last = words.pop()!;
    const d: Def = { ...base, kind: "group" };
    for (const w of words) {
      if (w === "override") d.override = true;
      else if (w === "optional") d.optional = true;
      else bad(`unknown keyword '${w}'`);
    }
    const at = last.indexOf("@");
    d.group = at === -1 ? last : last.slice(0, at);
    if (d.group === "" || d.group === "/") bad("empty group");
    if (at !== -1) d.package = last.slice(at + 1) === "_here_" ? "" : last.slice(at + 1);
    if (v === null) d.value = null;
    else if (typeof v === "string") d.value = stripExt(v.trim());
    else if (Array.isArray(v) && v.every((x) => typeof x === "string")) {
      d.value = (v as string[]).map((x) => stripExt(x.trim()));
    } else bad("the option must be a name, a list of names or null");
    if (typeof d.value === "string" && d.value.includes("${")) {
      bad("interpolations in defaults lists are not supported");
    }
    return d;
  }
  return bad("expected '_self_', a config path or a one-key mapping 'group: option'");
}

interface Meta {
  external: boolean;
  containing?: string;
  used: boolean;
}

class Overrides {
  choices = new Map<string, string | string[] | null>();
  meta = new Map<string, Meta>();
  appends: Def[] = [];
  configOverrides: Override[] = [];
  deletions = new Map<string, { name: string | null; used: boolean }>();
  known = new Map<string, string | string[] | null>();
  knownPerGroup = new Map<string, Set<string>>();

  constructor(repo: Repo, overrides: Override[]) {
    for (const o of overrides) {
      const isGroup = repo.groupExists(o.key) && !o.key.includes(".");
      if (isMap(o.value) || !isGroup) {
        this.configOverrides.push(o);
        continue;
      }
      const key = o.package !== undefined ? `${o.key}@${o.package}` : o.key;
      if (o.kind === "force") {
        throw new ConfigError(
          `'++' cannot be used with config groups: '${o.input}'`,
          `use ${o.input.slice(2)}`,
        );
      }
      if (o.kind === "delete") {
        const v = o.value;
        if (v !== undefined && v !== null && typeof v !== "string") {
          throw new ConfigError(`'${o.input}': a config group deletion takes an option name`);
        }
        this.deletions.set(key, {
          name: typeof v === "string" && v !== "" ? stripExt(v) : null,
          used: false,
        });
        continue;
      }
      const v = o.value;
      let value: string | string[] | null;
      if (v === null) value = null;
      else if (typeof v === "string") value = stripExt(v);
      else if (Array.isArray(v) && v.every((x) => typeof x === "string")) {
        value = (v as string[]).map(stripExt);
      } else if (typeof v === "number" || typeof v === "boolean") value = String(o.raw ?? v);
      else {
        throw new ConfigError(
          `'${o.input}': a config group choice must be a name or a list of names`,
        );
      }
      if (o.kind === "add") {
        this.appends.push({
          kind: "group",
          group: o.key,
          value,
          package: o.package,
          optional: false,
          override: false,
          externalAppend: true,
          primary: false,
        });
      } else {
        this.choices.set(key, value);
        this.meta.set(key, { external: true, used: false });
      }
    }
  }

  addOverride(containing: string, d: Def): void {
    const key = overrideKey(d);
    if (!this.choices.has(key)) {
      this.choices.set(key, d.value ?? null);
      this.meta.set(key, { external: false, containing, used: false });
    }
  }

  isOverridden(d: Def): boolean {
    return d.kind === "group" && this.choices.has(overrideKey(d));
  }

  overrideDefaultOption(d: Def): void {
    const key = overrideKey(d);
    if (this.choices.has(key)) {
      d.value = this.choices.get(key)!;
      this.meta.get(key)!.used = true;
    }
  }

  setKnownChoice(d: Def): void {
    if (d.kind !== "group") return;
    const key = overrideKey(d);
    const name = Array.isArray(d.value) ? d.value : nameOf(d);
    if (!this.known.has(key)) this.known.set(key, name);
    else if (JSON.stringify(this.known.get(key)) !== JSON.stringify(name)) {
      throw new ConfigError(
        `multiple values for config group '${key}'`,
        `to change it use 'override ${key}: ${name}' in the defaults list`,
      );
    }
    const g = groupPath(d);
    if (!this.knownPerGroup.has(g)) this.knownPerGroup.set(g, new Set());
    this.knownPerGroup.get(g)!.add(key);
  }

  isDeleted(d: Def): boolean {
    if (d.kind !== "group") return false;
    const del = this.deletions.get(overrideKey(d));
    if (!del) return false;
    return del.name === null || del.name === nameOf(d);
  }

  delete(d: Def): void {
    d.deleted = true;
    this.deletions.get(overrideKey(d))!.used = true;
  }

  ensureUsed(repo: Repo): void {
    for (const [key, meta] of this.meta) {
      if (meta.used) continue;
      const group = key.split("@")[0];
      const choices = [...(this.knownPerGroup.get(group) ?? [])].sort();
      const v = this.choices.get(key);
      const shown = Array.isArray(v) ? `[${v.join(",")}]` : String(v);
      const where = meta.containing ? `in '${meta.containing}': ` : "";
      let hint: string;
      if (choices.length) hint = `did you mean ${choices.map((c) => `'${c}'`).join(" or ")}?`;
      else if (meta.external) hint = `to add it to the defaults list use +${key}=${shown}`;
      else hint = `no '${group}' entry in the defaults list`;
      if (!choices.length && !repo.groupExists(group)) {
        const near = rankByDistance(group, repo.groups()).slice(0, 5);
        hint = `no config group '${group}'; groups: ${near.join(", ")}`;
      }
      throw new ConfigError(
        `${where}cannot choose '${key}=${shown}': '${key}' is not in the defaults list`,
        hint,
      );
    }
    for (const [key, del] of this.deletions) {
      if (!del.used) {
        throw new ConfigError(
          `cannot delete '${
            del.name === null ? key : `${key}=${del.name}`
          }': no match in the defaults list`,
        );
      }
    }
  }
}

function validateSelf(parent: Def, defaults: Def[], file: string): void {
  let hasSelf = false;
  let hasNonOverride = false;
  for (const d of defaults) {
    if (!d.override) hasNonOverride = true;
    if (d.self) {
      if (hasSelf) throw new ConfigError(`${file}: '_self_' appears twice in the defaults list`);
      hasSelf = true;
    }
  }
  if ((!hasSelf && hasNonOverride) || defaults.length === 0) {
    defaults.push({
      kind: "config",
      path: "_self_",
      self: true,
      optional: false,
      override: false,
      externalAppend: false,
      primary: parent.primary,
    });
  }
}

interface Result {
  configPath: string;
  package: string;
  isSelf: boolean;
  parent?: string;
  overrideKey?: string;
}

class Composer {
  readonly ov: Overrides;
  #stack: string[] = [];

  constructor(readonly repo: Repo, overrides: Override[]) {
    this.ov = new Overrides(repo, overrides);
  }

  #notFound(tree: Tree): never {
    const d = tree.node;
    const parent = tree.parent ? configPath(tree.parent.node) : undefined;
    const inParent = parent && !tree.parent!.node.primary
      ? ` (in ${this.repo.displayName(parent)})`
      : "";
    if (d.primary) {
      throw new ConfigError(
        `cannot find the primary config '${configPath(d)}'`,
        "check the config sources",
      );
    }
    if (d.kind === "group") {
      const g = groupPath(d);
      const name = nameOf(d)!;
      const opts = this.repo.options(g);
      if (opts.length === 0) {
        const near = rankByDistance(g, this.repo.groups()).slice(0, 8);
        throw new ConfigError(
          `unknown config group '${g}'${inParent}`,
          `groups: ${near.join(", ")}`,
        );
      }
      const ranked = rankByDistance(name, opts);
      const shown = ranked.slice(0, 15).join(", ") + (ranked.length > 15 ? ", ..." : "");
      throw new ConfigError(
        `unknown option '${name}' for config group '${g}'${inParent}`,
        `available: ${shown}`,
      );
    }
    const p = configPath(d);
    const near = rankByDistance(p, this.repo.allConfigs()).slice(0, 5);
    throw new ConfigError(`config '${p}' not found${inParent}`, `closest: ${near.join(", ")}`);
  }

  expand(tree: Tree, isRoot: boolean): Tree {
    const parent = tree.node;
    if (isRoot) {
      parent.parentBaseDir = "";
      parent.parentPackage = "";
      if (!this.repo.exists(configPath(parent))) this.#notFound(tree);
    }
    const name = nameOf(parent);
    if (name !== null && name !== "???") {
      const pre = this.repo.load(configPath(parent));
      if (pre) setPackageHeader(parent, pre.packageHeader);
    }
    if (this.ov.isDeleted(parent)) {
      this.ov.delete(parent);
      return tree;
    }
    this.ov.setKnownChoice(parent);
    if (name === null) return tree;
    if (name === "???") {
      const g = groupPath(parent);
      throw new ConfigError(
        `config group '${overrideKey(parent)}' needs a choice`,
        `e.g. ${overrideKey(parent)}=${this.repo.options(g)[0] ?? "<option>"}`,
      );
    }
    const path = configPath(parent);
    const loaded = this.repo.load(path);
    if (!loaded) {
      if (parent.optional) {
        parent.deleted = true;
        return tree;
      }
      this.#notFound(tree);
    }
    if (this.#stack.includes(path) || this.#stack.length > 64) {
      throw new ConfigError(`defaults list cycle: ${[...this.#stack, path].join(" -> ")}`);
    }
    const file = this.repo.displayName(path);
    const defaults = (loaded.defaults ?? []).map((e) => parseEntry(e, file)).filter((d) =>
      !isHydraGroup(d)
    );
    if (defaults.length > 0 || (isRoot && this.ov.appends.length > 0)) {
      validateSelf(parent, defaults, file);
    }
    if (isRoot) defaults.push(...this.ov.appends);
    this.#updateOverrides(defaults, parent, path);
    this.#stack.push(path);
    const children: (Tree | Def)[] = [];
    const add = (t: Tree) => {
      const sub = this.expand(t, false);
      children.push(sub.children === undefined ? t.node : sub);
    };
    for (const d of [...defaults].reverse()) {
      if (d.self) {
        children.push(d);
        continue;
      }
      if (d.override) continue;
      setParent(d, groupPath(parent), finalPackage(parent));
      if (this.ov.isOverridden(d)) this.ov.overrideDefaultOption(d);
      if (d.kind === "group" && Array.isArray(d.value)) {
        this.ov.setKnownChoice(d);
        for (const item of [...d.value].reverse()) {
          if (item.includes("${")) {
            throw new ConfigError(`${file}: interpolations in option lists are not supported`);
          }
          const node: Def = {
            kind: "config",
            path: `${d.group}/${item}`,
            package: d.package,
            optional: d.optional,
            override: false,
            externalAppend: false,
            primary: false,
          };
          setParent(node, groupPath(parent), finalPackage(parent));
          add({ node, parent: tree });
        }
      } else {
        add({ node: d, parent: tree });
      }
    }
    this.#stack.pop();
    if (children.length > 0) tree.children = children.reverse();
    return tree;
  }

  #updateOverrides(defaults: Def[], parent: Def, parentPath: string): void {
    let last: Def | undefined;
    for (const d of defaults) {
      if (d.self) continue;
      setParent(d, groupPath(parent), finalPackage(parent));
      if (last && !(d.override || d.externalAppend)) {
        throw new ConfigError(
          `in '${parentPath}': '${describeDef(last)}' comes before '${describeDef(d)}'`,
          "overrides must be at the end of the defaults list",
        );
      }
      if (d.kind === "group" && d.override) {
        last = d;
        this.ov.addOverride(parentPath, d);
      } else if (d.kind === "config" && d.override) {
        throw new ConfigError(`in '${parentPath}': 'override' needs a config group`);
      }
    }
  }

  results(root: Tree): Result[] {
    const out: Result[] = [];
    const visit = (tree: Tree | undefined, node: Def) => {
      if (node.deleted) return;
      if (node.kind === "group" && (node.value === "???" || node.value === null)) return;
      if (node.self) {
        const t = tree!;
        out.push({
          configPath: configPath(t.node),
          package: finalPackage(t.node),
          isSelf: true,
          parent: t.parent ? configPath(t.parent.node) : undefined,
        });
        return;
      }
      if (nameOf(node) === null) return;
      out.push({
        configPath: configPath(node),
        package: finalPackage(node),
        isSelf: false,
        parent: tree ? configPath(tree.node) : undefined,
        overrideKey: node.kind === "group" ? overrideKey(node) : undefined,
      });
    };
    const walk = (tree: Tree) => {
      if (!tree.children || tree.children.length === 0) visit(tree.parent, tree.node);
      else {
        for (const c of tree.children) {
          if (isDef(c)) visit(tree, c);
          else walk(c);
        }
      }
    };
    walk(root);
    const seen = new Set<string>();
    for (const r of out) {
      if (r.isSelf || r.overrideKey === undefined) continue;
      if (seen.has(r.overrideKey)) {
        throw new ConfigError(
          `config group '${r.overrideKey}' appears more than once in the final defaults list`,
          "use 'override' to change a choice",
        );
      }
      seen.add(r.overrideKey);
    }
    return out;
  }
}

// ------------------------------------------------------------------- merging

/** OmegaConf merge: mappings merge key by key; lists, scalars and null replace; '???' does not. */
export function mergeInto(dest: ConfigMap, src: ConfigMap): void {
  for (const [k, v] of Object.entries(src)) {
    const cur = dest[k];
    if (v === "???" && Object.hasOwn(dest, k)) continue;
    if (isMap(cur) && isMap(v)) mergeInto(cur, v);
    else dest[k] = clone(v);
  }
}

function wrap(body: ConfigMap, pkg: string): ConfigMap {
  if (pkg === "") return clone(body);
  let out: ConfigValue = clone(body);
  for (const seg of pkg.split(".").reverse()) out = { [seg]: out };
  return out as ConfigMap;
}

/** Escapes every "${" of a resolved tree so that resolving it again keeps the text. */
export function escapeInterpolations(v: ConfigValue): ConfigValue {
  if (typeof v === "string") {
    return v.includes("${")
      ? v.replace(/(\\*)\$\{/g, (_, bs: string) => "\\".repeat(2 * bs.length + 1) + "${")
      : v;
  }
  if (Array.isArray(v)) return v.map(escapeInterpolations);
  if (isMap(v)) {
    const out: ConfigMap = {};
    for (const [k, x] of Object.entries(v)) out[k] = escapeInterpolations(x);
    return out;
  }
  return v;
}

/** Removes every key that starts with "__", recursively (train/run.py::dictconfig_filter_key). */
export function dropDunder(v: ConfigValue): void {
  if (Array.isArray(v)) v.forEach(dropDunder);
  else if (isMap(v)) {
    for (const k of Object.keys(v)) {
      if (k.startsWith("__")) delete v[k];
      else dropDunder(v[k]);
    }
  }
}

function defaultEnv(): Record<string, string | undefined> {
  try {
    return Deno.env.toObject();
  } catch {
    return {};
  }
}

function defaultCwd(): string {
  try {
    return Deno.cwd();
  } catch {
    return ".";
  }
}

export interface Composition {
  /** the merged config before command-line key overrides and resolution */
  merged: ConfigMap;
  /** config files in merge order, with their package */
  order: { configPath: string; package: string }[];
  /** group choices (`${hydra:runtime.choices.GROUP}`) */
  choices: Record<string, ConfigValue>;
  configOverrides: Override[];
  /** the config groups of the sources (for suggestions) */
  groups: string[];
}

/** Builds the defaults list and merges the files (no key overrides, no resolution). */
export function composeRaw(overrides: string[], opts: ComposeOptions): Composition {
  return guard(() => {
    const sources = [...(opts.extraSources ?? []), ...opts.sources];
    const repo = new Repo(sources);
    const parsed = overrides.map(parseOverride);
    const c = new Composer(repo, parsed);
    const primary: Def = {
      kind: "config",
      path: opts.configName ?? "config",
      optional: false,
      override: false,
      externalAppend: false,
      primary: true,
    };
    const root = c.expand({ node: primary }, true);
    c.ov.ensureUsed(repo);
    for (const g of opts.requireGroups ?? []) {
      const v = c.ov.known.get(g);
      if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) {
        const opts_ = repo.options(g);
        throw new ConfigError(
          `no ${g} chosen`,
          `choose one: ${g}=${opts_.slice(0, 6).join(` | ${g}=`)}${
            opts_.length > 6 ? " | ..." : ""
          }`,
        );
      }
    }
    const results = c.results(root);
    const merged: ConfigMap = {};
    for (const r of results) {
      const loaded = repo.load(r.configPath)!;
      mergeInto(merged, wrap(loaded.body, r.package));
    }
    const choices: Record<string, ConfigValue> = {};
    for (const [k, v] of c.ov.known) choices[k] = v;
    return {
      merged,
      order: results.map((r) => ({ configPath: r.configPath, package: r.package })),
      choices,
      configOverrides: c.ov.configOverrides,
      groups: repo.groups(),
    };
  });
}

/**
 * Composes the config as a Hydra app's command line sees it: the defaults
 * tree from `config.yaml`, group choices and key overrides from the command
 * line, `__` keys removed, every interpolation resolved. Throws ConfigError.
 */
export function composeConfig(overrides: string[], opts: ComposeOptions): Config {
  return guard(() => {
    const comp = composeRaw(overrides, opts);
    const ctx: ResolveContext = {
      cwd: opts.cwd ?? defaultCwd(),
      env: opts.env ?? defaultEnv(),
      now: opts.now ?? new Date(),
      choices: comp.choices,
      budget: new Budget(),
    };
    const cfg = comp.merged;
    applyConfigOverrides(
      cfg,
      comp.configOverrides,
      (root, path) => tryResolve(root, path, ctx),
      comp.groups,
    );
    dropDunder(cfg);
    return resolveTree(cfg, ctx);
  });
}

/**
 * Applies `key=value` overrides (same grammar and checks as the command line,
 * no group choices) to an already composed config, e.g. one stored in a
 * checkpoint, and resolves the result. The input is not modified.
 */
export function applyOverrides(
  cfg: Config,
  overrides: string[],
  opts: Omit<ComposeOptions, "sources" | "extraSources" | "configName"> = {},
): Config {
  return guard(() => {
    const ctx: ResolveContext = {
      cwd: opts.cwd ?? defaultCwd(),
      env: opts.env ?? defaultEnv(),
      now: opts.now ?? new Date(),
      budget: new Budget(),
    };
    // the config is resolved already: a "${" left in it is literal text
    const root = escapeInterpolations(clone(cfg)) as ConfigMap;
    applyConfigOverrides(root, overrides.map(parseOverride), (r, path) => tryResolve(r, path, ctx));
    return resolveTree(root, ctx);
  });
}
