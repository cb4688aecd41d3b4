/**
 * The defaults tree of Hydra 1.3 (hydra/_internal/defaults_list.py): entries
 * of a defaults list, their groups and packages, and the overrides that
 * choose options (first registration wins, the command line first).
 */
import { ConfigError } from "./errors.ts";
import type { Override } from "./overrides.ts";
import { brief, isMap, rankByDistance } from "./util.ts";
import { type Repo, stripExt } from "./repo.ts";

export interface Def {
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

export interface Tree {
  node: Def;
  parent?: Tree;
  children?: (Tree | Def)[];
}

export function isDef(x: Tree | Def): x is Def {
  return "kind" in x;
}

export function groupPath(d: Def): string {
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

export function nameOf(d: Def): string | null {
  if (d.kind === "group") return typeof d.value === "string" ? d.value : null;
  const i = d.path!.lastIndexOf("/");
  return i === -1 ? d.path! : d.path!.slice(i + 1);
}

export function configPath(d: Def): string {
  if (d.kind === "group") return `${groupPath(d)}/${nameOf(d)}`;
  const abs = d.path!.startsWith("/");
  const p = d.path!.replace(/^\//, "");
  const base = d.parentBaseDir ?? "";
  return abs || base === "" ? p : `${base}/${p}`;
}

export function relGroupPath(d: Def): string {
  if (d.kind === "group") return d.group!.replace(/^\//, "");
  const p = d.path!.replace(/^\//, "");
  const i = p.lastIndexOf("/");
  return i === -1 ? "" : p.slice(0, i);
}

export function finalPackage(d: Def, useHeader = true): string {
  const parentPkg = d.kind === "group" && d.externalAppend ? "" : d.parentPackage ?? "";
  let pkg = d.package === undefined && useHeader ? d.packageHeader : d.package;
  if (pkg === undefined) pkg = relGroupPath(d).replace(/\//g, ".");
  const name = d.kind === "group" && Array.isArray(d.value) ? null : nameOf(d);
  if (name !== null) pkg = pkg.split("_name_").join(name);
  const ret = parentPkg === "" ? pkg : pkg === "" ? parentPkg : `${parentPkg}.${pkg}`;
  const i = ret.lastIndexOf("_global_");
  return i === -1 ? ret : ret.slice(i + "_global_".length + 1);
}

export function overrideKey(d: Def): string {
  const gp = groupPath(d);
  const def = gp.replace(/\//g, ".");
  const fin = finalPackage(d, false);
  return def !== fin ? `${gp}@${fin === "" ? "_global_" : fin}` : gp;
}

export function setParent(d: Def, baseDir: string, pkg: string): void {
  d.parentBaseDir = baseDir;
  d.parentPackage = pkg;
  if (d.package !== undefined && d.package.includes("_group_")) {
    d.package = `_global_.${d.package.split("_group_").join(groupPath(d).replace(/\//g, "."))}`;
  }
}

export function setPackageHeader(d: Def, header: string | undefined): void {
  if (header === undefined || header === "_group_") return;
  let h = header;
  if (h !== "_global_" && !h.startsWith("_global_.")) h = h === "" ? "_global_" : `_global_.${h}`;
  d.packageHeader = h.split("_group_").join(groupPath(d).replace(/\//g, "."));
}

export function isHydraGroup(d: Def): boolean {
  if (d.kind !== "group") return false;
  const g = relGroupPath(d);
  return g === "hydra" || g.startsWith("hydra/");
}

export function describeDef(d: Def): string {
  if (d.kind === "config") return d.path!;
  const v = Array.isArray(d.value) ? `[${d.value.join(", ")}]` : String(d.value);
  return `${d.override ? "override " : ""}${d.group}: ${v}`;
}

/** One entry of a `defaults` list, as written. */
export function parseEntry(e: unknown, file: string): Def {
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

export interface Meta {
  external: boolean;
  containing?: string;
  used: boolean;
}

export class Overrides {
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

export function validateSelf(parent: Def, defaults: Def[], file: string): void {
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
