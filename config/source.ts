/**
 * Where config files come from. A ConfigSource is a set of YAML files by
 * relative path ("trainer/default.yaml"); composition searches a list of
 * them in order, so an earlier source overrides or extends a later one (a
 * program's built-in tree is last). A program that compiles its tree in
 * (text imports) makes it a source with `mapSource`, so `deno compile` needs
 * no files.
 */
import { ConfigError } from "./errors.ts";

export interface ConfigSource {
  /** shown in messages ("built-in", a directory) */
  readonly name: string;
  /** prefix of file names in messages ("configs/", "/my/dir/") */
  readonly display: string;
  /** relative POSIX path -> YAML text */
  readonly files: ReadonlyMap<string, string>;
}

/** A source from an object of path -> text (tests, programmatic use). */
export function mapSource(
  files: Record<string, string>,
  name = "memory",
  display = "",
): ConfigSource {
  return { name, display, files: new Map(Object.entries(files)) };
}

const MAX_FILES = 5000;
const MAX_DEPTH = 12;

function isYaml(name: string): boolean {
  return /\.ya?ml$/.test(name);
}

function displayDir(dir: string): string {
  return dir.endsWith("/") ? dir : `${dir}/`;
}

function notFound(dir: string, e: unknown): never {
  const msg = e instanceof Error ? e.message : String(e);
  throw new ConfigError(`cannot read config directory '${dir}': ${msg.split("\n")[0]}`);
}

/** Every .yaml/.yml file under `dir` (read now), as a source searched before the bundle. */
export async function dirSource(dir: string): Promise<ConfigSource> {
  const files = new Map<string, string>();
  const walk = async (abs: string, rel: string, depth: number) => {
    if (depth > MAX_DEPTH) return;
    for await (const e of Deno.readDir(abs)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const a = `${abs}/${e.name}`;
      if (e.isDirectory) await walk(a, r, depth + 1);
      else if ((e.isFile || e.isSymlink) && isYaml(e.name)) {
        if (files.size >= MAX_FILES) {
          throw new ConfigError(`config directory '${dir}' has too many files`);
        }
        files.set(r, await Deno.readTextFile(a));
      }
    }
  };
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) throw new Error("not a directory");
    await walk(dir.replace(/\/+$/, "") || "/", "", 0);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    notFound(dir, e);
  }
  return { name: dir, display: displayDir(dir), files };
}

/** dirSource, synchronously. */
export function dirSourceSync(dir: string): ConfigSource {
  const files = new Map<string, string>();
  const walk = (abs: string, rel: string, depth: number) => {
    if (depth > MAX_DEPTH) return;
    for (const e of Deno.readDirSync(abs)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const a = `${abs}/${e.name}`;
      if (e.isDirectory) walk(a, r, depth + 1);
      else if ((e.isFile || e.isSymlink) && isYaml(e.name)) {
        if (files.size >= MAX_FILES) {
          throw new ConfigError(`config directory '${dir}' has too many files`);
        }
        files.set(r, Deno.readTextFileSync(a));
      }
    }
  };
  try {
    if (!Deno.statSync(dir).isDirectory) throw new Error("not a directory");
    walk(dir.replace(/\/+$/, "") || "/", "", 0);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    notFound(dir, e);
  }
  return { name: dir, display: displayDir(dir), files };
}
