/**
 * Matmul autotuning results, cached per adapter: a JSON file mapping a
 * problem key (transposes, sizes, batch) to the fastest tile config measured
 * on that adapter. Loaded at start-up by `train` and `bench`; written by
 * `based bench --tune`.
 */
import { join } from "node:path";
import type { Engine } from "../../tensor/engine.ts";
import { loadMatmulTuning, type MatmulConfig, matmulTuning } from "./matmul.ts";
import h200 from "./tuning/nvidia-h200.json" with { type: "json" };

/**
 * Tables measured on our GPU machines and shipped with the program, by
 * adapter name (`based bench --tune` on that adapter; BENCHMARKS.md).
 */
const BUILTIN: Record<string, { table: Record<string, MatmulConfig> }> = {
  "NVIDIA H200": h200 as { table: Record<string, MatmulConfig> },
};

/** The cache folder: BASED_CACHE_DIR, else XDG_CACHE_HOME/based, else ~/.cache/based. */
export function cacheDir(): string {
  const env = (k: string) => Deno.env.get(k);
  return env("BASED_CACHE_DIR") ??
    join(env("XDG_CACHE_HOME") ?? join(env("HOME") ?? ".", ".cache"), "based");
}

/** File of this adapter's table: its name, vendor and limits identify it. */
export function tuningPath(e: Engine): string {
  const id = `${e.info.name}|${e.info.vendor}|${e.info.architecture}|${e.info.backend}|` +
    `${e.limits.maxComputeWorkgroupStorageSize}|${e.limits.maxComputeInvocationsPerWorkgroup}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193) >>> 0;
  const slug = e.info.name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(
    0,
    40,
  );
  return join(cacheDir(), `matmul-${slug}-${h.toString(16).padStart(8, "0")}.json`);
}

/**
 * Loads the built-in table for this adapter (if we ship one), then the cached
 * table of this machine on top; returns the number of entries.
 */
export async function loadTuningCache(e: Engine): Promise<number> {
  const builtin = BUILTIN[e.info.name];
  if (builtin) loadMatmulTuning(builtin.table);
  try {
    const data = JSON.parse(await Deno.readTextFile(tuningPath(e)));
    if (data && typeof data.table === "object") {
      loadMatmulTuning(data.table);
    }
  } catch {
    // no cache (or an unreadable one): the built-in selection applies
  }
  return Object.keys(matmulTuning()).length;
}

export async function saveTuningCache(e: Engine): Promise<string> {
  const path = tuningPath(e);
  await Deno.mkdir(cacheDir(), { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(
    tmp,
    JSON.stringify(
      {
        adapter: e.info.name,
        backend: e.info.backend,
        date: new Date().toISOString(),
        table: matmulTuning(),
      },
      null,
      1,
    ),
  );
  await Deno.rename(tmp, path);
  return path;
}
