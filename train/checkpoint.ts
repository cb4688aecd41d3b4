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
import { basename, join } from "node:path";
import { BasedError } from "../errors.ts";
import {
  parseSafetensors,
  serializeSafetensors,
  tensorData,
  type TensorToWrite,
} from "../tensor/safetensors.ts";

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
  return [...m.entries()].map(([name, data]) => ({
    name,
    shape: shapes?.get(name) ?? [data.length],
    data,
  }));
}

function describeWriteError(e: unknown, dir: string): BasedError {
  const msg = (e as Error).message ?? String(e);
  if (/No space left|ENOSPC|os error 28/i.test(msg)) {
    return new BasedError(
      `disk full while writing a checkpoint in ${dir}; the previous checkpoint is kept`,
      "free disk space or change callbacks.model_checkpoint.dirpath",
    );
  }
  if (
    e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotADirectory ||
    /Permission denied|EACCES|EROFS|Read-only|Not a directory/i.test(msg)
  ) {
    return new BasedError(
      `cannot write checkpoints into ${dir} (${msg.split("\n")[0]})`,
      "set callbacks.model_checkpoint.dirpath to a writable directory",
    );
  }
  return new BasedError(
    `failed to write a checkpoint in ${dir}: ${
      msg.split("\n")[0]
    }; the previous checkpoint is kept`,
  );
}

/** Checks up front that `dir` can be created and written (clear error instead of failing at step 1000). */
export async function ensureWritableDir(dir: string, what: string, key: string): Promise<void> {
  const probe = join(dir, `.write-test-${Deno.pid}`);
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(probe, "ok");
    await Deno.remove(probe);
  } catch (e) {
    // a full disk creates the probe and then fails to write it: do not leave it behind
    await Deno.remove(probe).catch(() => {});
    throw new BasedError(
      `${what} directory ${dir} is not writable (${(e as Error).message.split("\n")[0]})`,
      `set ${key} to a writable directory`,
    );
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
    await writeSynced(
      join(tmp, "model.safetensors"),
      serializeSafetensors(toTensors(data.weights, opts.shapes), {
        format: "pt",
        ...opts.metadata,
      }),
    );
    await writeSynced(
      join(tmp, "optimizer.safetensors"),
      serializeSafetensors(toTensors(data.optimizer, opts.shapes)),
    );
    await writeSynced(
      join(tmp, "state.json"),
      new TextEncoder().encode(JSON.stringify(data.state, null, 1)),
    );
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
    // the new checkpoint is in place: failing to delete the old copy is not a failed save
    if (hadOld) await Deno.remove(old, { recursive: true }).catch(() => {});
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw describeWriteError(e, root);
  }
  await pruneCheckpoints(root, opts.keep ?? 2, final);
  return final;
}

/**
 * Complete checkpoint directories, newest (highest step) first. A
 * `step_N.old-<pid>` directory (the previous copy of step N while
 * saveCheckpoint replaces it) stands in for `step_N` when a crash between the
 * two renames left no complete `step_N`. Directories that look like
 * checkpoints but have no marker (step_N, .tmp-step_N-<pid>) are added to
 * `incomplete` when given.
 */
export async function listCheckpoints(
  root: string,
  incomplete?: { dir: string; step: number }[],
): Promise<{ dir: string; step: number }[]> {
  const found = new Map<number, { dir: string; step: number; old: boolean }>();
  try {
    for await (const e of Deno.readDir(root)) {
      const ck = /^step_(\d+)(\.old-\d+)?$/.exec(e.name);
      const tmp = /^\.tmp-step_(\d+)-\d+$/.exec(e.name);
      if (!e.isDirectory || !(ck || tmp)) continue;
      const c = { dir: join(root, e.name), step: Number((ck ?? tmp)![1]), old: !!ck?.[2] };
      const complete = await Deno.stat(join(c.dir, MARKER)).then(() => true, () => false);
      if (tmp || !complete) {
        // never renamed into place (even with its marker) or without marker: an interrupted write
        incomplete?.push({ dir: c.dir, step: c.step });
        continue;
      }
      const prev = found.get(c.step);
      if (!prev || (prev.old && !c.old)) found.set(c.step, c);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw new BasedError(`cannot list checkpoints in ${root} (${firstLine(e)})`);
  }
  return [...found.values()].map(({ dir, step }) => ({ dir, step })).sort((a, b) =>
    b.step - a.step
  );
}

/**
 * Keeps the newest `keep` complete checkpoints (by step) and always `current`,
 * the one just written, even when directories of higher steps exist (another
 * run's, or corrupt ones that resume skips): it must never delete itself.
 */
async function pruneCheckpoints(root: string, keep: number, current: string): Promise<void> {
  const all = await listCheckpoints(root);
  for (const c of all.slice(Math.max(1, keep))) {
    if (c.dir !== current) await Deno.remove(c.dir, { recursive: true }).catch(() => {});
  }
  // leftovers of interrupted writes (other processes'), and replaced copies whose step is complete
  for await (const e of Deno.readDir(root)) {
    if (e.name.startsWith(".tmp-step_")) {
      const pid = Number(e.name.split("-").pop());
      if (pid !== Deno.pid) {
        await Deno.remove(join(root, e.name), { recursive: true }).catch(() => {});
      }
    }
    const old = /^(step_\d+)\.old-\d+$/.exec(e.name);
    if (old && await Deno.stat(join(root, old[1], MARKER)).then(() => true, () => false)) {
      await Deno.remove(join(root, e.name), { recursive: true }).catch(() => {});
    }
  }
}

function firstLine(e: unknown): string {
  const msg = (e as Error)?.message ?? String(e);
  return msg.replace(/[\p{Cc}\u2028\u2029][\s\S]*$/u, "");
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
    throw new BasedError(
      `${dir} is not a complete checkpoint (no ${MARKER} marker)`,
      "it was interrupted while being written; use an older one",
    );
  }
  const read = async (f: string) => {
    try {
      return await Deno.readFile(join(dir, f));
    } catch (e) {
      throw new BasedError(`${join(dir, f)}: cannot read (${(e as Error).message.split("\n")[0]})`);
    }
  };
  const weights = readTensors(await read("model.safetensors"), join(dir, "model.safetensors"));
  const optimizer = readTensors(
    await read("optimizer.safetensors"),
    join(dir, "optimizer.safetensors"),
  );
  let state: CheckpointState;
  try {
    state = JSON.parse(new TextDecoder().decode(await read("state.json")));
  } catch (e) {
    if (e instanceof BasedError) throw e;
    throw new BasedError(`${join(dir, "state.json")}: corrupt (${firstLine(e)})`);
  }
  if (!Number.isSafeInteger(state?.step) || state.step < 0) {
    throw new BasedError(`${join(dir, "state.json")}: no step number`);
  }
  const named = /^step_(\d+)(?:\.old-\d+)?$/.exec(basename(dir));
  if (named && Number(named[1]) !== state.step) {
    throw new BasedError(
      `${join(dir, "state.json")}: says step ${state.step}, the directory is ${basename(dir)}`,
    );
  }
  return { dir, weights, optimizer, state };
}

/**
 * The newest complete checkpoint under `root` that loads; corrupt ones are
 * reported through `warn` and skipped (never deleted).
 */
export async function latestCheckpoint(
  root: string,
  warn: (s: string) => void = console.warn,
): Promise<LoadedCheckpoint | null> {
  const incomplete: { dir: string; step: number }[] = [];
  let found: LoadedCheckpoint | null = null;
  for (const c of await listCheckpoints(root, incomplete)) {
    try {
      found = await loadCheckpoint(c.dir);
      break;
    } catch (e) {
      warn(`warning: skipping checkpoint ${c.dir}: ${(e as Error).message}`);
    }
  }
  // interrupted writes newer than the checkpoint used: say which and what is used instead
  const used = found
    ? `using ${found.dir} (step ${found.state.step})`
    : "no complete checkpoint to use";
  for (const c of incomplete.sort((a, b) => b.step - a.step)) {
    if (!found || c.step >= found.state.step) {
      warn(`warning: ignoring ${c.dir}: an interrupted checkpoint write (not complete); ${used}`);
    }
  }
  return found;
}
