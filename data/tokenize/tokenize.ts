/**
 * Corpus tokenisation (as `train/datamodules/language_modeling_hf.py::process_dataset`) over
 * chunks, in worker threads for large inputs, results concatenated in the original row order.
 *
 * Text files are cut into chunks after a "\n" byte (0x0A never occurs inside a
 * multi-byte UTF-8 sequence, and cutting after "\n" never separates "\r\n"), so
 * chunking does not change the rows. Inputs under `workerMinBytes`, or when
 * workers cannot start (e.g. a `deno compile` binary built without
 * `--include data/tokenize/worker.ts`), are tokenised on the calling thread.
 */
import { tokenizeRowList, tokenizeTextChunk } from "./core.ts";

export interface TokenizeOptions {
  addEos?: boolean;
  /** log lines (progress of large inputs) */
  log?: (s: string) => void;
  /** a label for log lines, e.g. "wikitext-103-v1 train" */
  label?: string;
  /** worker count; 0 = calling thread only. Default: min(hardware threads, 16) */
  workers?: number;
  /** inputs smaller than this many bytes/chars stay on the calling thread (default 8 MiB) */
  workerMinBytes?: number;
  /** target chunk size in bytes/chars (default 2 MiB) */
  chunkBytes?: number;
}

type Job = { bytes: Uint8Array } | { rows: string[] };

/** Splits a UTF-8 file's bytes into chunks that end after a "\n" (or at the end). */
export function chunkTextBytes(bytes: Uint8Array, target: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(bytes.length, start + Math.max(1, target));
    if (end < bytes.length) {
      const nl = bytes.indexOf(0x0a, end - 1);
      end = nl < 0 ? bytes.length : nl + 1;
    }
    out.push(bytes.subarray(start, end));
    start = end;
  }
  return out;
}

function chunkRows(rows: readonly string[], target: number): string[][] {
  const out: string[][] = [];
  let cur: string[] = [];
  let size = 0;
  for (const r of rows) {
    cur.push(r);
    size += r.length;
    if (size >= target) {
      out.push(cur);
      cur = [];
      size = 0;
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

function concat(parts: Uint16Array[]): Uint16Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint16Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function runLocal(job: Job, addEos: boolean): Uint16Array {
  return "bytes" in job ? tokenizeTextChunk(job.bytes, addEos) : tokenizeRowList(job.rows, addEos);
}

function defaultWorkers(): number {
  const hc = typeof navigator !== "undefined" ? navigator.hardwareConcurrency ?? 1 : 1;
  return Math.max(1, Math.min(16, hc));
}

const WORKER_URL = new URL("./worker.ts", import.meta.url);

/** False when the worker module is a local file that is not there (e.g. inside a bundle). */
function workerModulePresent(): boolean {
  if (WORKER_URL.protocol !== "file:") return true;
  try {
    return Deno.statSync(WORKER_URL).isFile;
  } catch {
    return false;
  }
}

/** Runs jobs on a worker pool (order kept); falls back to the calling thread on worker failure. */
async function runJobs(jobs: Job[], addEos: boolean, nWorkers: number): Promise<Uint16Array[]> {
  const results: Uint16Array[] = new Array(jobs.length);
  if (nWorkers <= 0 || jobs.length <= 1) {
    for (let i = 0; i < jobs.length; i++) results[i] = runLocal(jobs[i], addEos);
    return results;
  }
  const url = WORKER_URL.href;
  const workers: Worker[] = [];
  let next = 0;
  let failed = false;
  const runOn = (w: Worker, id: number): Promise<Uint16Array> =>
    new Promise((resolve, reject) => {
      w.onmessage = (e: MessageEvent<{ id: number; tokens?: Uint16Array; error?: string }>) => {
        if (e.data.error !== undefined) reject(new Error(e.data.error));
        else resolve(e.data.tokens!);
      };
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        reject(new Error(`tokenizer worker failed: ${e.message}`));
      };
      const job = jobs[id];
      // copy byte chunks so the worker gets its own buffer (the file buffer stays intact)
      if ("bytes" in job) {
        const bytes = job.bytes.slice();
        w.postMessage({ id, addEos, bytes }, [bytes.buffer]);
      } else w.postMessage({ id, addEos, rows: job.rows });
    });
  const lane = async (w: Worker): Promise<void> => {
    while (!failed && next < jobs.length) {
      const id = next++;
      try {
        results[id] = await runOn(w, id);
      } catch (err) {
        // a tokeniser error is a data error: rethrow it; a worker that cannot start falls back
        if (err instanceof Error && !err.message.startsWith("tokenizer worker failed")) throw err;
        failed = true;
        results[id] = runLocal(jobs[id], addEos);
      }
    }
  };
  try {
    for (let i = 0; i < Math.min(nWorkers, jobs.length); i++) {
      try {
        workers.push(new Worker(url, { type: "module" }));
      } catch {
        break;
      }
    }
    await Promise.all(workers.map(lane));
  } finally {
    for (const w of workers) w.terminate();
  }
  for (let i = 0; i < jobs.length; i++) results[i] ??= runLocal(jobs[i], addEos);
  return results;
}

async function run(jobs: Job[], size: number, o: TokenizeOptions): Promise<Uint16Array> {
  const addEos = o.addEos ?? true;
  const big = size >= (o.workerMinBytes ?? 8 << 20);
  const nWorkers = big && jobs.length > 1 && workerModulePresent()
    ? (o.workers ?? defaultWorkers())
    : 0;
  const t0 = performance.now();
  if (big) {
    o.log?.(
      `tokenising ${o.label ?? "corpus"}: ${(size / 2 ** 20).toFixed(1)} MiB in ${jobs.length} ` +
        `chunks on ${
          nWorkers ? `${nWorkers} worker${nWorkers === 1 ? "" : "s"}` : "the main thread"
        }`,
    );
  }
  const tokens = concat(await runJobs(jobs, addEos, nWorkers));
  if (big) {
    const s = (performance.now() - t0) / 1000;
    o.log?.(
      `tokenised ${o.label ?? "corpus"}: ${tokens.length.toLocaleString("en-US")} tokens in ` +
        `${s.toFixed(1)} s (${(tokens.length / s / 1e6).toFixed(2)} M tokens/s)`,
    );
  }
  return tokens;
}

/** Tokenises the bytes of a UTF-8 text file (`.tokens` / `.raw` rows, rows.ts). */
export function tokenizeTextBytes(
  bytes: Uint8Array,
  o: TokenizeOptions = {},
): Promise<Uint16Array> {
  const jobs = chunkTextBytes(bytes, o.chunkBytes ?? 2 << 20).map((b) => ({ bytes: b }));
  return run(jobs, bytes.length, o);
}

/** Tokenises rows (e.g. a parquet `text` column), already in the row form of rows.ts. */
export function tokenizeRows(
  rows: readonly string[],
  o: TokenizeOptions = {},
): Promise<Uint16Array> {
  let size = 0;
  for (const r of rows) size += r.length;
  const jobs = chunkRows(rows, o.chunkBytes ?? 2 << 20).map((r) => ({ rows: r }));
  return run(jobs, size, o);
}
