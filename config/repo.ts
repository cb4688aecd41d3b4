/**
 * The config files of a list of sources, searched in order: which groups and
 * options exist, and each file parsed once.
 */
import type { ConfigSource } from "./source.ts";
import { parseConfigFile, type ParsedFile } from "./yaml_io.ts";

const parseCache = new WeakMap<ConfigSource, Map<string, ParsedFile>>();

export function stripExt(p: string): string {
  return p.replace(/\.ya?ml$/, "");
}

export class Repo {
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
