/**
 * `deno task lint` runs this after `deno lint`: fails (exit 1) on an import
 * cycle among the repository's modules, or on an import that breaks the
 * layering (the ground floor, tensor/ and errors.ts, imports nothing above it;
 * config/ is a package of its own).
 *
 * It reads every static `import … from`, `export … from` and `import "…"` of
 * the .ts files, relative specifiers only. Cycles are looked for among value
 * imports (a type-only import is erased before the program runs, so the
 * mutual references of Tensor and Engine are allowed); the layering applies
 * to both.
 *
 *   deno run --allow-read tools/check_imports.ts [root]
 */
import { dirname, join, normalize } from "node:path";

const SKIP = new Set(["node_modules", "dist", ".cache", ".device", "runs", ".git"]);

/** Folder (or file) -> the only folders/files it may import from, besides itself. */
const LAYERS: Record<string, string[]> = {
  "errors.ts": [],
  "tensor/": ["errors.ts"],
  "config/": [],
};

function walk(root: string, dir = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(root, dir))) {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory && !SKIP.has(e.name)) out.push(...walk(root, rel));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(rel);
  }
  return out;
}

const IMPORT_RE = /^\s*(?:import|export)\s+([^"';]*?\s+from\s+)?["'](\.{1,2}\/[^"']+)["']/gm;

export interface Import {
  /** repository path of the imported module */
  path: string;
  /** `import type …`, `export type …`, or every named specifier marked `type` */
  typeOnly: boolean;
}

function isTypeOnly(clause: string | undefined): boolean {
  if (!clause) return false;
  const c = clause.replace(/\s+from\s+$/, "").trim();
  if (/^type\b/.test(c)) return true;
  const m = /^\{([^}]*)\}$/.exec(c);
  if (!m) return false;
  const names = m[1].split(",").map((x) => x.trim()).filter(Boolean);
  return names.length > 0 && names.every((n) => /^type\s/.test(n));
}

/** The relative imports of one module's source, as repository paths. */
export function importsOf(file: string, src: string): Import[] {
  const out: Import[] = [];
  for (const m of src.matchAll(IMPORT_RE)) {
    out.push({ path: normalize(join(dirname(file), m[2])), typeOnly: isTypeOnly(m[1]) });
  }
  return out;
}

/** Strongly connected components of more than one module (or a self-import). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return found;
}

function layerOf(path: string): string | undefined {
  return Object.keys(LAYERS).find((l) => l.endsWith("/") ? path.startsWith(l) : path === l);
}

/** Imports that leave a layer for somewhere it may not go, or reach into the lab code (dev/). */
export function layerViolations(graph: Map<string, string[]>): string[] {
  const bad: string[] = [];
  for (const [from, tos] of graph) {
    if (!from.startsWith("dev/")) {
      for (const to of tos.filter((t) => t.startsWith("dev/"))) {
        bad.push(`${from} imports ${to} (dev/ is lab code: nothing outside it may import it)`);
      }
    }
    const layer = layerOf(from);
    if (layer === undefined) continue;
    for (const to of tos) {
      const within = (p: string) => p.endsWith("/") ? to.startsWith(p) : to === p;
      if (within(layer) || LAYERS[layer].some(within)) continue;
      bad.push(
        `${from} imports ${to} (${layer} may import only ${[layer, ...LAYERS[layer]].join(", ")})`,
      );
    }
  }
  return bad.sort();
}

if (import.meta.main) {
  const root = Deno.args[0] ?? Deno.cwd();
  const all = new Map<string, string[]>();
  const values = new Map<string, string[]>();
  for (const f of walk(root)) {
    const imports = importsOf(f, Deno.readTextFileSync(join(root, f)));
    all.set(f, imports.map((i) => i.path));
    values.set(f, imports.filter((i) => !i.typeOnly).map((i) => i.path));
  }
  const cyc = cycles(values);
  const bad = layerViolations(all);
  for (const c of cyc) console.error(`import cycle: ${c.join(" <-> ")}`);
  for (const b of bad) console.error(`layering: ${b}`);
  if (cyc.length || bad.length) {
    console.error(`error: ${cyc.length} import cycle(s), ${bad.length} layering violation(s)`);
    Deno.exit(1);
  }
  console.log(`imports: ${all.size} modules, no cycles, layering kept`);
}
