/**
 * Crash-safe checkpoints. A checkpoint is a directory `step_<N>/` holding
 *   model.safetensors      weights under the reference's state_dict names
 *   optimizer.safetensors  AdamW moments (`exp_avg.<name>`, `exp_avg_sq.<name>`)
 *   state.json             step, optimizer step count, schedule, data position,
 *                          RNG state, metrics counters, the resolved config
 *   COMPLETE               the completion marker, written last
 * It is written into a temporary directory (every file fsync-ed), renamed into
 * place, and the parent directory fsync-ed; older checkpoints are removed only
 * after that. Resume takes the newest directory whose marker exists and whose
 * files validate, and says which.
 */
import { join } from "node:path";
import { BasedError, formatBytes } from "../tensor/errors.ts";
import { parseSafetensors, serializeSafetensors, type TensorToWrite, tensorData } from "../tensor/safetensors.ts";

export const MARKER = "COMPLETE";

export interface CheckpointState {
  /** optimizer steps done */
  step: number;
  [key: string]: unknown;
}

export interface CheckpointData {
  weights: Map<string, Float32Array>;
  /** optimizer tensors by name (may be empty) */
  optimizer: Map<string, Float32Array>;
  state: CheckpointState;
}

export interface LoadedCheckpoint extends CheckpointData {
  dir: string;
}

export function checkpointName(step: number): string {
  return `step_${String(step).padStart(7, "0")}`;
}

async function writeSynced(path: string, data: Uint8Array): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    let off = 0;
    while (off < data.length) off += await f.write(data.subarray(off));
    await f.sync();
  } finally {
    f.close();
  }
}

async function syncDir(path: string): Promise<void> {
  try {
    const d = await Deno.open(path, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // some filesystems refuse fsync on directories; the rename is still atomic
  }
}

function toTensors(m: Map<string, Float32Array>, shapes?: Map<string, number[]>): TensorToWrite[] {
  return [...m.entries()].map(([name, data]) => ({ name, shape: shapes?.get(name) ?? [data.length], data }));
}

function describeWriteError(e: unknown, dir: string): BasedError {
  const msg = (e as Error).message ?? String(e);
  if (/No space left|ENOSPC|os error 28/i.test(msg)) {
    return new BasedError(`disk full while writing a checkpoint in ${dir}; the previous checkpoint is kept`, "free disk space or change callbacks.model_checkpoint.dirpath");
  }
  if (e instanceof Deno.errors.PermissionDenied || /Permission denied|EACCES|EROFS|Read-only/i.test(msg)) {
    return new BasedError(`cannot write checkpoints into ${dir} (${msg.split("\n")[0]})`, "set callbacks.model_checkpoint.dirpath to a writable directory");
  }
  return new BasedError(`failed to write a checkpoint in ${dir}: ${msg.split("\n")[0]}; the previous checkpoint is kept`);
}

/** Checks up front that `dir` can be created and written (clear error instead of failing at step 1000). */
export async function ensureWritableDir(dir: string, what: string, key: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    const probe = join(dir, `.write-test-${Deno.pid}`);
    await Deno.writeTextFile(probe, "ok");
    await Deno.remove(probe);
  } catch (e) {
    throw new BasedError(`${what} directory ${dir} is not writable (${(e as Error).message.split("\n")[0]})`, `set ${key} to a writable directory`);
  }
}

/**
 * Writes a checkpoint atomically and keeps the newest `keep` complete ones
 * (never deleting the previous one before the new one is complete).
 */
export async function saveCheckpoint(
  root: string,
  data: CheckpointData,
  opts: { shapes?: Map<string, number[]>; keep?: number; metadata?: Record<string, string> } = {},
): Promise<string> {
  const name = checkpointName(data.state.step);
  const final = join(root, name);
  const tmp = join(root, `.tmp-${name}-${Deno.pid}`);
  try {
    await Deno.mkdir(root, { recursive: true });
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(tmp);
    await writeSynced(join(tmp, "model.safetensors"), serializeSafetensors(toTensors(data.weights, opts.shapes), { format: "pt", ...opts.metadata }));
    await writeSynced(join(tmp, "optimizer.safetensors"), serializeSafetensors(toTensors(data.optimizer, opts.shapes)));
    await writeSynced(join(tmp, "state.json"), new TextEncoder().encode(JSON.stringify(data.state, null, 1)));
    await writeSynced(join(tmp, MARKER), new TextEncoder().encode(`${data.state.step}\n`));
    await syncDir(tmp);
    // an older directory of the same step (e.g. a resumed run) is replaced only now
    const old = `${final}.old-${Deno.pid}`;
    let hadOld = false;
    try {
      await Deno.rename(final, old);
      hadOld = true;
    } catch { /* none */ }
    await Deno.rename(tmp, final);
    await syncDir(root);
    if (hadOld) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw describeWriteError(e, root);
  }
  await pruneCheckpoints(root, opts.keep ?? 2);
  return final;
}

/** Complete checkpoint directories, newest (highest step) first. */
export async function listCheckpoints(root: string): Promise<{ dir: string; step: number }[]> {
  const out: { dir: string; step: number }[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      const m = /^step_(\d+)$/.exec(e.name);
      if (!e.isDirectory || !m) continue;
      try {
        await Deno.stat(join(root, e.name, MARKER));
        out.push({ dir: join(root, e.name), step: Number(m[1]) });
      } catch { /* incomplete: skipped */ }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort((a, b) => b.step - a.step);
}

async function pruneCheckpoints(root: string, keep: number): Promise<void> {
  const all = await listCheckpoints(root);
  for (const c of all.slice(Math.max(1, keep))) await Deno.remove(c.dir, { recursive: true }).catch(() => {});
  // leftovers of interrupted writes
  for await (const e of Deno.readDir(root)) {
    if (e.name.startsWith(".tmp-step_")) {
      const pid = Number(e.name.split("-").pop());
      if (pid !== Deno.pid) await Deno.remove(join(root, e.name), { recursive: true }).catch(() => {});
    }
  }
}

function readTensors(bytes: Uint8Array, path: string): Map<string, Float32Array> {
  const f = parseSafetensors(bytes, path);
  const m = new Map<string, Float32Array>();
  for (const name of f.tensors.keys()) {
    const d = tensorData(f, name);
    m.set(name, d instanceof Float32Array ? d : Float32Array.from(d));
  }
  return m;
}

/** Loads and validates one checkpoint directory. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  try {
    await Deno.stat(join(dir, MARKER));
  } catch {
    throw new BasedError(`${dir} is not a complete checkpoint (no ${MARKER} marker)`, "it was interrupted while being written; use an older one");
  }
  const read = async (f: string) => {
    try {
      return await Deno.readFile(join(dir, f));
    } catch (e) {
      throw new BasedError(`${join(dir, f)}: cannot read (${(e as Error).message.split("\n")[0]})`);
    }
  };
  const weights = readTensors(await read("model.safetensors"), join(dir, "model.safetensors"));
  const optimizer = readTensors(await read("optimizer.safetensors"), join(dir, "optimizer.safetensors"));
  let state: CheckpointState;
  try {
    state = JSON.parse(new TextDecoder().decode(await read("state.json")));
  } catch (e) {
    if (e instanceof BasedError) throw e;
    throw new BasedError(`${join(dir, "state.json")}: corrupt (${(e as Error).message})`);
  }
  if (typeof state?.step !== "number") throw new BasedError(`${join(dir, "state.json")}: no step number`);
  return { dir, weights, optimizer, state };
}

/**
 * The newest complete checkpoint under `root` that loads; corrupt ones are
 * reported through `warn` and skipped (never deleted).
 */
export async function latestCheckpoint(root: string, warn: (s: string) => void = console.warn): Promise<LoadedCheckpoint | null> {
  for (const c of await listCheckpoints(root)) {
    try {
      return await loadCheckpoint(c.dir);
    } catch (e) {
      warn(`warning: skipping checkpoint ${c.dir}: ${(e as Error).message}`);
    }
  }
  return null;
}

export { formatBytes };
