/**
 * How this process was started: the MPI launcher's environment variables
 * (no FFI, no MPI library: a single-process run imports only this).
 */
import { BasedError } from "../errors.ts";

/** Environment lookup (tests pass a plain object). */
export type Env = Record<string, string | undefined>;

/** The process environment, or {} without --allow-env. */
export function envObject(): Env {
  try {
    return Deno.env.toObject();
  } catch {
    return {};
  }
}

/** How this process was started by an MPI launcher, from the environment. */
export interface MpiLaunch {
  /** which launcher's variables were found */
  launcher: "openmpi" | "pmi" | "pmix";
  /** processes in the job (0 = not given by the environment; MPI_Comm_size tells) */
  size: number;
  rank: number;
  /** rank among the processes of this host (picks the GPU) */
  localRank: number;
  /** processes on this host (0 = unknown) */
  localSize: number;
}

function intVar(env: Env, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    throw new BasedError(`environment variable ${name}=${JSON.stringify(v)} is not a count`);
  }
  return n;
}

/**
 * Detects an MPI launch: Open MPI's mpirun (`OMPI_COMM_WORLD_SIZE`, `_RANK`,
 * `_LOCAL_RANK`, `_LOCAL_SIZE`), MPICH/Intel MPI hydra and Slurm's PMI-2
 * (`PMI_SIZE`, `PMI_RANK`, `MPI_LOCALRANKID`, `MPI_LOCALNRANKS`), PMIx
 * (`PMIX_RANK`, with Slurm's `SLURM_STEP_NUM_TASKS` / `SLURM_LOCALID`).
 * Null when none is set: a plain single-process run.
 */
export function detectLaunch(env: Env = envObject()): MpiLaunch | null {
  const ompiSize = intVar(env, "OMPI_COMM_WORLD_SIZE");
  if (ompiSize !== undefined) {
    const rank = intVar(env, "OMPI_COMM_WORLD_RANK") ?? 0;
    return {
      launcher: "openmpi",
      size: ompiSize,
      rank,
      localRank: intVar(env, "OMPI_COMM_WORLD_LOCAL_RANK") ?? rank,
      localSize: intVar(env, "OMPI_COMM_WORLD_LOCAL_SIZE") ?? 0,
    };
  }
  const pmiSize = intVar(env, "PMI_SIZE");
  if (pmiSize !== undefined) {
    const rank = intVar(env, "PMI_RANK") ?? 0;
    return {
      launcher: "pmi",
      size: pmiSize,
      rank,
      localRank: intVar(env, "MPI_LOCALRANKID") ?? intVar(env, "SLURM_LOCALID") ?? rank,
      localSize: intVar(env, "MPI_LOCALNRANKS") ?? 0,
    };
  }
  const pmixRank = intVar(env, "PMIX_RANK");
  if (pmixRank !== undefined) {
    return {
      launcher: "pmix",
      size: intVar(env, "SLURM_STEP_NUM_TASKS") ?? 0,
      rank: pmixRank,
      localRank: intVar(env, "SLURM_LOCALID") ?? intVar(env, "OMPI_COMM_WORLD_LOCAL_RANK") ??
        pmixRank,
      localSize: intVar(env, "SLURM_STEP_TASKS_PER_NODE") ?? 0,
    };
  }
  return null;
}
