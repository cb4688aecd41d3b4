/**
 * Checkpoint integrity: a checksum of every checkpoint file (its header and
 * each tensor, tensor/hash64.ts) stored in state.json when the checkpoint is
 * written and verified when it is read; non-finite weights or moments are
 * refused; the weights' shapes are checked against the model the config
 * builds. Each failure is one line naming the file and the tensor.
 */
import { join } from "node:path";
import { BasedError } from "../errors.ts";
import { hash64 } from "../tensor/hash64.ts";
import { parseSafetensors, tensorData } from "../tensor/safetensors.ts";

/** What state.json records of one checkpoint file. */
export interface FileChecksum {
  bytes: number;
  /** the 8-byte length and the JSON header */
  header: string;
  /** per tensor, its data bytes */
  tensors: Record<string, string>;
}

export interface VerifiedFile {
  tensors: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
}

/** The checksums of a serialized safetensors file (computed before it is written). */
export function checksumFile(bytes: Uint8Array, path: string): FileChecksum {
  const f = parseSafetensors(bytes, path);
  const tensors: Record<string, string> = {};
  for (const [name, t] of f.tensors) tensors[name] = hash64(f.data.subarray(t.begin, t.end)).hash;
  return {
    bytes: bytes.length,
    header: hash64(bytes.subarray(0, bytes.length - f.data.length)).hash,
    tensors,
  };
}

const HINT = "it was modified after writing; use another checkpoint (a directory of checkpoints " +
  "falls back to the newest one that verifies)";

/**
 * Parses a checkpoint file, checks it against its recorded checksums (when
 * `sums` is given; older checkpoints have none) and refuses NaN / Inf values.
 */
export function readVerified(
  bytes: Uint8Array,
  path: string,
  sums: FileChecksum | undefined,
): VerifiedFile {
  const f = parseSafetensors(bytes, path);
  if (sums && bytes.length !== sums.bytes) {
    throw new BasedError(`${path}: ${bytes.length} bytes, ${sums.bytes} when written`, HINT);
  }
  if (sums && hash64(bytes.subarray(0, bytes.length - f.data.length)).hash !== sums.header) {
    throw new BasedError(
      `${path}: the header (names, shapes, offsets) does not match its checksum`,
      HINT,
    );
  }
  if (sums) {
    for (const name of Object.keys(sums.tensors)) {
      if (!f.tensors.has(name)) throw new BasedError(`${path}: tensor '${name}' is missing`, HINT);
    }
  }
  const tensors = new Map<string, Float32Array>(), shapes = new Map<string, number[]>();
  for (const [name, t] of f.tensors) {
    const raw = f.data.subarray(t.begin, t.end);
    const h = hash64(raw, t.dtype === "F32");
    if (sums && sums.tensors[name] !== h.hash) {
      throw new BasedError(
        sums.tensors[name] === undefined
          ? `${path}: tensor '${name}' was not in the checkpoint when written`
          : `${path}: tensor '${name}' does not match its checksum`,
        HINT,
      );
    }
    const d = tensorData(f, name);
    const values = d instanceof Float32Array ? d : Float32Array.from(d);
    const bad = t.dtype === "F32" ? h.firstNonFinite : values.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) {
      throw new BasedError(
        `${path}: tensor '${name}' holds ${values[bad]} (element ${bad})`,
        "a checkpoint with non-finite values is never used; use an older checkpoint",
      );
    }
    tensors.set(name, values);
    shapes.set(name, t.shape);
  }
  return { tensors, shapes };
}

const show = (s: number[] | undefined) => s ? `[${s.join(", ")}]` : "none";

/**
 * Every parameter of the model the config builds is in the checkpoint with its
 * shape (weights, and the AdamW moments when `optimizer` is given).
 */
export function checkShapes(
  dir: string,
  params: readonly { name: string; shape: readonly number[] }[],
  weights: Map<string, number[]>,
  optimizer?: Map<string, number[]>,
): void {
  const files: [string, Map<string, number[]>, string[]][] = [
    ["model.safetensors", weights, [""]],
  ];
  if (optimizer) files.push(["optimizer.safetensors", optimizer, ["exp_avg.", "exp_avg_sq."]]);
  for (const [file, shapes, prefixes] of files) {
    for (const p of params) {
      for (const pre of prefixes) {
        const name = pre + p.name, s = shapes.get(name);
        if (!s) {
          throw new BasedError(
            `${join(dir, file)} has no tensor '${name}'`,
            "the checkpoint is from another model",
          );
        }
        if (s.length !== p.shape.length || s.some((d, i) => d !== p.shape[i])) {
          throw new BasedError(
            `${join(dir, file)}: tensor '${name}' has shape ${show(s)}, the model of its ` +
              `config needs ${show([...p.shape])}`,
            "the checkpoint is from another model, or its header was edited",
          );
        }
      }
    }
  }
}
