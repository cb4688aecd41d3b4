/**
 * MPI through Deno's FFI: just the calls data parallelism needs (init, rank,
 * size, in-place allreduce, broadcast, barrier, finalize), against Open MPI's
 * `libmpi` (Debian: `apt-get install openmpi-bin libopenmpi-dev`).
 *
 * Nothing here runs at import time: `Mpi.open()` loads the library, and only
 * `DataParallel.init` calls it, for `trainer.devices > 1` (or a launch by
 * mpirun). A single-process run never loads libmpi and needs no
 * `--allow-ffi`.
 *
 * Symbol resolution. Open MPI's handles are not integers: `MPI_COMM_WORLD`,
 * `MPI_FLOAT`, `MPI_SUM`, … are the addresses of global objects
 * (`ompi_mpi_comm_world`, `ompi_mpi_float`, `ompi_mpi_op_sum`; mpi.h:
 * `OMPI_PREDEFINED_GLOBAL(type, global) ((type) &(global))`), and
 * `MPI_IN_PLACE` is `(void *) 1`. We load libmpi with libc's own `dlopen`
 * (called through FFI) as RTLD_NOW | RTLD_GLOBAL, as mpi4py does (Open MPI's
 * plugins, dlopen-ed by MPI_Init, may resolve symbols of libmpi globally), and
 * take every address, functions and objects alike, from `dlsym` on that one
 * handle. The functions are then called through `Deno.UnsafeFnPointer`.
 * (Deno's own `dlopen` statics of type "pointer" give the same object
 * addresses; a test checks that the two agree.)
 *
 * Threads. The collectives are `nonblocking` FFI calls: Deno runs them on a
 * worker thread and returns a promise, so the event loop keeps running (GPU
 * readbacks of the next bucket complete meanwhile). MPI is therefore
 * initialised with MPI_THREAD_SERIALIZED (calls may come from any thread,
 * one at a time), and this class queues its calls so that at most one is in
 * flight. MPI_Init_thread and MPI_Finalize run on the main thread.
 *
 * Errors: MPI_ERRORS_RETURN is set on MPI_COMM_WORLD, every return code is
 * checked (MPI_SUCCESS = 0), and a failure becomes a one-line BasedError with
 * MPI_Error_string's text.
 */
import { BasedError } from "../errors.ts";
import { type Env, envObject } from "./launch.ts";

export { detectLaunch, type Env, type MpiLaunch } from "./launch.ts";

// ------------------------------------------------------------------ libc dlopen / dlsym

const LIBC_CANDIDATES: Record<string, string[]> = {
  linux: ["libc.so.6", "libdl.so.2", "libc.so"],
  darwin: ["libSystem.B.dylib"],
};

/** RTLD_NOW | RTLD_GLOBAL */
function rtldFlags(): number {
  return Deno.build.os === "darwin" ? 0x2 | 0x8 : 0x2 | 0x100;
}

const DL_SYMBOLS = {
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  dlerror: { parameters: [], result: "pointer" },
} as const;

type DlLib = Deno.DynamicLibrary<typeof DL_SYMBOLS>;

let dl: DlLib | null = null;

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

function ffiError(e: unknown): BasedError {
  const msg = (e as Error)?.message ?? String(e);
  if (e instanceof Deno.errors.NotCapable || /--allow-ffi|Requires ffi access/i.test(msg)) {
    return new BasedError(
      "several devices need FFI access to load MPI",
      "run with -A (or --allow-ffi)",
    );
  }
  return new BasedError(`FFI failed: ${msg.split("\n")[0]}`);
}

function libdl(): DlLib {
  if (dl) return dl;
  if (typeof Deno.dlopen !== "function") {
    throw new BasedError("this Deno has no FFI (Deno.dlopen)", "several devices need Deno 2.x");
  }
  const tried: string[] = [];
  for (const name of LIBC_CANDIDATES[Deno.build.os] ?? LIBC_CANDIDATES.linux) {
    try {
      dl = Deno.dlopen(name, DL_SYMBOLS);
      return dl;
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) throw ffiError(e);
      tried.push(name);
    }
  }
  throw new BasedError(`cannot load the C library's dlopen (tried ${tried.join(", ")})`);
}

function dlerror(): string {
  const p = libdl().symbols.dlerror();
  return p ? Deno.UnsafePointerView.getCString(p) : "unknown error";
}

// ------------------------------------------------------------------ finding libmpi

/**
 * Library names tried, in order: `BASED_MPI_LIB` alone when set; else the
 * Open MPI sonames through the dynamic linker's search path, then
 * `$OPAL_PREFIX/lib` and the `lib` folder beside an `mpirun` on PATH.
 */
export function mpiLibraryCandidates(env: Env = envObject()): string[] {
  const explicit = env.BASED_MPI_LIB;
  if (explicit) return [explicit];
  const mac = Deno.build.os === "darwin";
  const names = mac ? ["libmpi.40.dylib", "libmpi.dylib"] : ["libmpi.so.40", "libmpi.so"];
  const out = [...names];
  const dirs: string[] = [];
  if (env.OPAL_PREFIX) dirs.push(`${env.OPAL_PREFIX.replace(/\/+$/, "")}/lib`);
  for (const p of (env.PATH ?? "").split(":")) {
    if (!p) continue;
    try {
      Deno.statSync(`${p}/mpirun`);
      dirs.push(`${p.replace(/\/+$/, "")}/../lib`);
    } catch { /* not here */ }
  }
  for (const d of dirs) for (const n of names) out.push(`${d}/${n}`);
  return [...new Set(out)];
}

// ------------------------------------------------------------------ the bindings

const FN = {
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalized: { parameters: ["buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: {
    parameters: ["buffer", "i32", "pointer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
} as const;

type Fns = { [K in keyof typeof FN]: Deno.UnsafeFnPointer<(typeof FN)[K]> };

/** Open MPI's predefined objects whose addresses are the handles. */
const OBJECTS = {
  commWorld: "ompi_mpi_comm_world",
  float: "ompi_mpi_float",
  double: "ompi_mpi_double",
  int: "ompi_mpi_int",
  byte: "ompi_mpi_byte",
  sum: "ompi_mpi_op_sum",
  max: "ompi_mpi_op_max",
  min: "ompi_mpi_op_min",
  errorsReturn: "ompi_mpi_errors_return",
} as const;

type Handles = { [K in keyof typeof OBJECTS]: Deno.PointerObject };

/** MPI_THREAD_SINGLE … MULTIPLE (Open MPI's enum order). */
export const THREAD_LEVELS = ["single", "funneled", "serialized", "multiple"] as const;
export type ThreadLevel = (typeof THREAD_LEVELS)[number];

export type ReduceOp = "sum" | "max" | "min";
/** Buffers MPI reads and writes in place (one MPI datatype each). */
export type MpiBuffer = Float32Array | Float64Array | Int32Array | Uint8Array;

/** MPI_IN_PLACE is `(void *) 1` (created lazily: pointer creation needs FFI permission). */
let inPlace: Deno.PointerValue = null;
function IN_PLACE(): Deno.PointerValue {
  return inPlace ??= Deno.UnsafePointer.create(1n);
}
const MAX_COUNT = 2 ** 31 - 1;

/** A typed array as the FFI "buffer" argument (the pointer to its first element). */
function raw(buf: MpiBuffer): Uint8Array<ArrayBuffer> {
  return buf as unknown as Uint8Array<ArrayBuffer>;
}

export class Mpi {
  #fn: Fns;
  #h: Handles;
  #tail: Promise<unknown> = Promise.resolve();
  #rank = -1;
  #size = -1;
  #initialisedHere = false;
  #finalized = false;
  /** thread level MPI granted */
  threadLevel: ThreadLevel | null = null;

  private constructor(
    /** the library path or name that loaded */
    readonly library: string,
    fns: Fns,
    handles: Handles,
  ) {
    this.#fn = fns;
    this.#h = handles;
  }

  /**
   * Loads libmpi (see mpiLibraryCandidates) and resolves every symbol. Does
   * not initialise MPI. Throws a BasedError saying what to install when no
   * library loads or it is not Open MPI.
   */
  static open(opts: { env?: Env } = {}): Mpi {
    const env = opts.env ?? envObject();
    const d = libdl();
    const errors: string[] = [];
    for (const name of mpiLibraryCandidates(env)) {
      let handle: Deno.PointerValue;
      try {
        handle = d.symbols.dlopen(cstr(name), rtldFlags());
      } catch (e) {
        throw ffiError(e);
      }
      if (!handle) {
        errors.push(dlerror().split("\n")[0]);
        continue;
      }
      const sym = (s: string) => d.symbols.dlsym(handle, cstr(s));
      const fns: Partial<Record<string, unknown>> = {};
      for (const [k, def] of Object.entries(FN)) {
        const p = sym(k);
        if (!p) {
          throw new BasedError(`${name} has no ${k}`, "set BASED_MPI_LIB to Open MPI's libmpi.so");
        }
        fns[k] = new Deno.UnsafeFnPointer(p as Deno.PointerObject<never>, def);
      }
      const handles: Partial<Record<string, Deno.PointerObject>> = {};
      for (const [k, s] of Object.entries(OBJECTS)) {
        const p = sym(s);
        if (!p) {
          throw new BasedError(
            `${name} is not Open MPI (no symbol ${s}); only Open MPI is supported`,
            "install openmpi-bin and libopenmpi-dev, or set BASED_MPI_LIB to Open MPI's libmpi.so",
          );
        }
        handles[k] = p;
      }
      return new Mpi(name, fns as Fns, handles as Handles);
    }
    const env0 = env.BASED_MPI_LIB ? `BASED_MPI_LIB=${env.BASED_MPI_LIB}` : "libmpi.so.40";
    throw new BasedError(
      `cannot load the MPI library (${env0}: ${errors[0] ?? "not found"})`,
      "install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) or set BASED_MPI_LIB",
    );
  }

  /** The address of one of Open MPI's predefined objects (tests). */
  handle(name: keyof typeof OBJECTS): Deno.PointerObject {
    return this.#h[name];
  }

  /** MPI_Get_library_version (callable before init). */
  get version(): string {
    const buf = new Uint8Array(4096);
    const len = new Int32Array(1);
    this.#check("MPI_Get_library_version", this.#fn.MPI_Get_library_version.call(buf, len));
    return new TextDecoder().decode(buf.subarray(0, Math.max(0, len[0]))).replace(/\0.*$/s, "")
      .trim().split("\n")[0];
  }

  /** MPI_Initialized */
  get initialized(): boolean {
    const f = new Int32Array(1);
    this.#check("MPI_Initialized", this.#fn.MPI_Initialized.call(f));
    return f[0] !== 0;
  }

  /** MPI_Finalized */
  get finalized(): boolean {
    const f = new Int32Array(1);
    this.#check("MPI_Finalized", this.#fn.MPI_Finalized.call(f));
    return f[0] !== 0;
  }

  /**
   * MPI_Init_thread(NULL, NULL, level) (unless MPI is initialised already),
   * MPI_ERRORS_RETURN on MPI_COMM_WORLD, then rank and size. Needs at least
   * MPI_THREAD_SERIALIZED: the collectives run on Deno's worker threads.
   */
  init(level: ThreadLevel = "serialized"): this {
    if (this.#rank >= 0) return this;
    if (!this.initialized) {
      const provided = new Int32Array(1);
      const want = THREAD_LEVELS.indexOf(level);
      this.#check(
        "MPI_Init_thread",
        this.#fn.MPI_Init_thread.call(null, null, want, provided),
      );
      this.#initialisedHere = true;
      this.threadLevel = THREAD_LEVELS[provided[0]] ?? null;
      if (provided[0] < THREAD_LEVELS.indexOf("serialized")) {
        throw new BasedError(
          `MPI granted thread level ${this.threadLevel ?? provided[0]}, ` +
            "data parallelism needs MPI_THREAD_SERIALIZED",
          "use an Open MPI built with thread support (Debian's is)",
        );
      }
    }
    this.#check(
      "MPI_Comm_set_errhandler",
      this.#fn.MPI_Comm_set_errhandler.call(this.#h.commWorld, this.#h.errorsReturn),
    );
    const r = new Int32Array(1);
    this.#check("MPI_Comm_rank", this.#fn.MPI_Comm_rank.call(this.#h.commWorld, r));
    const s = new Int32Array(1);
    this.#check("MPI_Comm_size", this.#fn.MPI_Comm_size.call(this.#h.commWorld, s));
    this.#rank = r[0];
    this.#size = s[0];
    return this;
  }

  get rank(): number {
    this.#needInit();
    return this.#rank;
  }

  get size(): number {
    this.#needInit();
    return this.#size;
  }

  /** In-place MPI_Allreduce over MPI_COMM_WORLD (MPI_IN_PLACE). Same result on every rank. */
  allreduce(buf: Float32Array | Float64Array | Int32Array, op: ReduceOp = "sum"): Promise<void> {
    this.#needInit();
    const type = this.#type(buf, "MPI_Allreduce");
    const opH = this.#h[op];
    return this.#serial(
      "MPI_Allreduce",
      () =>
        this.#fn.MPI_Allreduce.call(
          IN_PLACE(),
          raw(buf),
          buf.length,
          type,
          opH,
          this.#h.commWorld,
        ),
    );
  }

  /** MPI_Bcast of `buf` from `root` over MPI_COMM_WORLD. */
  bcast(buf: MpiBuffer, root = 0): Promise<void> {
    this.#needInit();
    const type = this.#type(buf, "MPI_Bcast");
    if (!Number.isInteger(root) || root < 0 || root >= this.#size) {
      throw new BasedError(`MPI_Bcast: root ${root} outside [0, ${this.#size})`);
    }
    return this.#serial(
      "MPI_Bcast",
      () =>
        this.#fn.MPI_Bcast.call(
          raw(buf),
          buf.length,
          type,
          root,
          this.#h.commWorld,
        ),
    );
  }

  /** MPI_Barrier over MPI_COMM_WORLD. */
  barrier(): Promise<void> {
    this.#needInit();
    return this.#serial("MPI_Barrier", () => this.#fn.MPI_Barrier.call(this.#h.commWorld));
  }

  /**
   * MPI_Finalize on the main thread, once all queued calls are done (only
   * when this object initialised MPI).
   */
  async finalize(): Promise<void> {
    if (this.#finalized || !this.#initialisedHere) return;
    await this.#tail;
    this.#finalized = true;
    if (this.finalized) return;
    this.#check("MPI_Finalize", this.#fn.MPI_Finalize.call());
  }

  /** MPI_Abort(MPI_COMM_WORLD, code): ends every process of the job. */
  abort(code = 1): void {
    this.#fn.MPI_Abort.call(this.#h.commWorld, code);
  }

  /** Text of an MPI error code. */
  errorString(code: number): string {
    const buf = new Uint8Array(1024);
    const len = new Int32Array(1);
    if (this.#fn.MPI_Error_string.call(code, buf, len) !== 0) return `MPI error ${code}`;
    return new TextDecoder().decode(buf.subarray(0, Math.max(0, len[0]))).replace(/\0.*$/s, "");
  }

  #needInit(): void {
    if (this.#rank < 0) throw new Error("Mpi: call init() first");
    if (this.#finalized) throw new Error("Mpi: already finalized");
  }

  #type(buf: MpiBuffer, what: string): Deno.PointerObject {
    if (buf.length > MAX_COUNT) {
      throw new BasedError(`${what}: ${buf.length} elements is over MPI's int count`);
    }
    if (buf instanceof Float32Array) return this.#h.float;
    if (buf instanceof Float64Array) return this.#h.double;
    if (buf instanceof Int32Array) return this.#h.int;
    if (buf instanceof Uint8Array) return this.#h.byte;
    throw new Error(`${what}: unsupported buffer type`);
  }

  #check(what: string, rc: number): void {
    if (rc !== 0) {
      throw new BasedError(`${what} failed on rank ${this.#rank}: ${this.errorString(rc)} (${rc})`);
    }
  }

  /** Runs `call` after every earlier call has finished (one MPI call in flight). */
  #serial(what: string, call: () => Promise<number>): Promise<void> {
    const run = this.#tail.then(async () => this.#check(what, await call()));
    this.#tail = run.catch(() => {});
    return run;
  }
}
