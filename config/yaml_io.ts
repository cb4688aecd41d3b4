/**
 * YAML in and out: parsing a config file (with its `# @package` header and
 * file/line positions in errors) and printing a resolved config.
 */
import { Document, isScalar, parse, visit } from "yaml";
import { ConfigError } from "./errors.ts";
import { clip, type Config, type ConfigMap, type ConfigValue, isMap, MAX_DEPTH } from "./util.ts";

export interface ParsedFile {
  /** `# @package X` (X as written), or undefined */
  packageHeader?: string;
  /** the `defaults` list as written (undefined when absent) */
  defaults?: unknown[];
  /** everything but `defaults` */
  body: ConfigMap;
}

/** The `# @key value` lines of the comment block that opens a file (Hydra's header). */
export function readHeader(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "") continue;
    if (!line.startsWith("#")) break;
    const m = /^#\s*@(\w+)\s+(.*?)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Converts what the yaml package returns into config values, rejecting anything else. */
function toValue(v: unknown, file: string, path: string, depth: number): ConfigValue {
  if (depth > MAX_DEPTH) throw new ConfigError(`${file}: nested too deeply at '${clip(path)}'`);
  if (v === null || v === undefined) return null;
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map((x, i) => toValue(x, file, `${path}[${i}]`, depth + 1));
  if (v instanceof Map) {
    const out: ConfigMap = {};
    for (const [k, x] of v) {
      out[String(k)] = toValue(x, file, path ? `${path}.${k}` : String(k), depth + 1);
    }
    return out;
  }
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    const out: ConfigMap = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      out[k] = toValue(x, file, path ? `${path}.${k}` : k, depth + 1);
    }
    return out;
  }
  throw new ConfigError(
    `${file}: unsupported YAML value at '${path || "<root>"}'`,
    "use plain mappings, lists, strings, numbers, booleans and null",
  );
}

/** Parses YAML text into a config value; errors name the file and line. */
export function parseYaml(text: string, file: string): ConfigValue {
  let doc: unknown;
  try {
    doc = parse(text, { merge: true, maxAliasCount: 1000, prettyErrors: true });
  } catch (e) {
    const err = e as { message?: string; linePos?: { line: number; col: number }[] };
    const pos = err.linePos?.[0];
    const where = pos ? `${file}:${pos.line}:${pos.col}` : file;
    const msg = String(err.message ?? e).split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(`malformed YAML in ${where}: ${msg}`);
  }
  return toValue(doc, file, "", 0);
}

/** Parses one config file: header, `defaults` and body. */
export function parseConfigFile(text: string, file: string): ParsedFile {
  const v = parseYaml(text, file);
  const header = readHeader(text);
  if (v === null) return { packageHeader: header.package, body: {} };
  if (!isMap(v)) {
    throw new ConfigError(
      `${file}: a config file must be a mapping, got a ${Array.isArray(v) ? "list" : typeof v}`,
    );
  }
  const body = { ...v };
  let defaults: unknown[] | undefined;
  if (Object.hasOwn(body, "defaults")) {
    const d = body.defaults;
    delete body.defaults;
    if (d !== null && !Array.isArray(d)) {
      throw new ConfigError(`${file}: 'defaults' must be a list`);
    }
    defaults = d ?? [];
  }
  return { packageHeader: header.package, defaults, body };
}

/** The resolved config as YAML (for `based train ... --cfg`); parses back to the same object. */
export function toYaml(cfg: Config): string {
  try {
    const doc = new Document(cfg, { aliasDuplicateObjects: false });
    // short lists of scalars in flow style: `betas: [0.9, 0.95]`
    visit(doc, {
      Seq(_, node) {
        if (node.items.length <= 16 && node.items.every((x) => isScalar(x))) node.flow = true;
      },
    });
    return doc.toString({ lineWidth: 0, indent: 2, flowCollectionPadding: false });
  } catch (e) {
    throw new ConfigError(`cannot print the config as YAML: ${(e as Error).message}`);
  }
}
