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
  Budget,
  clone,
  type Config,
  type ConfigMap,
  type ConfigValue,
  guard,
  isMap,
  rankByDistance,
} from "./util.ts";
import { Repo } from "./repo.ts";
import {
  configPath,
  type Def,
  describeDef,
  finalPackage,
  groupPath,
  isDef,
  isHydraGroup,
  nameOf,
  overrideKey,
  Overrides,
  parseEntry,
  setPackageHeader,
  setParent,
  type Tree,
  validateSelf,
} from "./defaults.ts";

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
