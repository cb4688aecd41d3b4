/**
 * The parity runner's fixture folder (manifest.json + safetensors files in
 * the format of the reference fixtures) and the comparison rule of its
 * manifest's tolerances.
 */
import { join } from "node:path";
import type { Engine } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import { parseSafetensors, type SafeFile, tensorData } from "../tensor/safetensors.ts";
import type { Tensor } from "../tensor/tensor.ts";

export interface Tolerance {
  atol: number;
  rtol: number;
  rel_l2: number;
}

export interface ManifestTensor {
  file: string;
  shape: number[];
  dtype: string;
  tolerance: Tolerance | string;
  meaning?: string;
}

export interface Manifest {
  files: Record<string, unknown>;
  info: Record<string, Record<string, unknown>>;
  tensors: Record<string, ManifestTensor>;
}

export interface CaseResult {
  name: string;
  status: "pass" | "fail" | "skip";
  /** tensors compared */
  tensors: number;
  /** max over tensors of max|got-ref| / max|ref| */
  maxRelErr: number;
  /** max over tensors of ||got-ref|| / ||ref|| */
  relL2: number;
  /** the tensor with the largest error relative to its tolerance, and that ratio */
  worst: string;
  worstRatio: number;
  note?: string;
}

export interface Comparison {
  name: string;
  ok: boolean;
  maxRelErr: number;
  relL2: number;
  /** max over elements of |d| / (atol + rtol|ref|), and rel_l2 / bound */
  ratio: number;
  msg?: string;
}

/** The manifest's pass rule: |d| ≤ atol + rtol·|ref| everywhere and ‖d‖/‖ref‖ ≤ rel_l2. */
export function compareTensor(
  name: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: Tolerance,
): Comparison {
  if (got.length !== ref.length) {
    return {
      name,
      ok: false,
      maxRelErr: Infinity,
      relL2: Infinity,
      ratio: Infinity,
      msg: `${got.length} values, expected ${ref.length}`,
    };
  }
  let maxD = 0, maxRef = 0, num = 0, den = 0, ratio = 0, bad = -1;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    const r = Math.abs(ref[i]);
    if (!(d <= maxD)) maxD = Number.isNaN(d) ? Infinity : d;
    if (r > maxRef) maxRef = r;
    num += d * d;
    den += r * r;
    const q = d / (tol.atol + tol.rtol * r);
    if (!(q <= ratio)) {
      ratio = Number.isNaN(q) ? Infinity : q;
      if (ratio > 1 && bad < 0) bad = i;
    }
  }
  const relL2 = Math.sqrt(num / Math.max(den, 1e-300));
  const l2ratio = relL2 / tol.rel_l2;
  const ok = ratio <= 1 && l2ratio <= 1;
  return {
    name,
    ok,
    maxRelErr: maxD / Math.max(maxRef, 1e-30),
    relL2,
    ratio: Math.max(ratio, l2ratio),
    msg: ok
      ? undefined
      : bad >= 0
      ? `${name}[${bad}] = ${got[bad]}, expected ${ref[bad]}`
      : `${name}: rel. L2 ${relL2.toExponential(2)} > ${tol.rel_l2}`,
  };
}

export class Fixtures {
  #files = new Map<string, SafeFile>();
  constructor(readonly dir: string, readonly manifest: Manifest) {}

  static async open(dir: string): Promise<Fixtures> {
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, "manifest.json"));
    } catch {
      throw new BasedError(
        `${dir}: no manifest.json`,
        "give a folder in the fixture format (manifest.json + safetensors)",
      );
    }
    let m: Manifest;
    try {
      m = JSON.parse(text);
    } catch (e) {
      throw new BasedError(`${join(dir, "manifest.json")}: not JSON (${(e as Error).message})`);
    }
    if (!m || typeof m.tensors !== "object") {
      throw new BasedError(`${join(dir, "manifest.json")}: no 'tensors' table`);
    }
    m.info ??= {};
    const f = new Fixtures(dir, m);
    for (const file of new Set(Object.values(m.tensors).map((t) => t.file))) {
      const path = join(dir, file);
      try {
        f.#files.set(file, parseSafetensors(await Deno.readFile(path), path));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue; // cases needing it are skipped
        throw e;
      }
    }
    return f;
  }

  has(name: string): boolean {
    const t = this.manifest.tensors[name];
    return !!t && !!this.#files.get(t.file)?.tensors.has(name);
  }

  data(name: string): Float32Array {
    const t = this.manifest.tensors[name];
    const f = t && this.#files.get(t.file);
    if (!f) throw new BasedError(`fixture tensor '${name}' is missing`);
    const d = tensorData(f, name);
    return d instanceof Float32Array ? d : Float32Array.from(d);
  }

  ints(name: string): Int32Array {
    const t = this.manifest.tensors[name];
    const f = t && this.#files.get(t.file);
    if (!f) throw new BasedError(`fixture tensor '${name}' is missing`);
    const d = tensorData(f, name);
    return d instanceof Int32Array ? d : Int32Array.from(d);
  }

  shape(name: string): number[] {
    return this.manifest.tensors[name].shape;
  }

  tol(name: string): Tolerance | null {
    const t = this.manifest.tensors[name]?.tolerance;
    return t && typeof t === "object" ? t : null;
  }

  /** Names of expected (non-input) tensors. */
  expected(): string[] {
    return Object.keys(this.manifest.tensors).filter((n) => this.tol(n) !== null);
  }
}

/** (B, A, C, ...) <-> (A, B, ...) style swap of axes 1 and 2 of a rank-4 array. */
export function swap12(x: ArrayLike<number>, shape: number[]): Float32Array {
  const [a, b, c, d] = shape;
  const out = new Float32Array(a * b * c * d);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      for (let k = 0; k < c; k++) {
        const src = ((i * b + j) * c + k) * d;
        const dst = ((i * c + k) * b + j) * d;
        for (let l = 0; l < d; l++) out[dst + l] = x[src + l];
      }
    }
  }
  return out;
}

export class CaseRun {
  comps: Comparison[] = [];
  constructor(readonly fx: Fixtures, readonly covered: Set<string>) {}
  check(name: string, got: ArrayLike<number>, ref?: ArrayLike<number>): void {
    const tol = this.fx.tol(name);
    if (!tol || !this.fx.has(name)) return;
    this.covered.add(name);
    this.comps.push(compareTensor(name, got, ref ?? this.fx.data(name), tol));
  }
  result(name: string): CaseResult {
    if (this.comps.length === 0) {
      return {
        name,
        status: "skip",
        tensors: 0,
        maxRelErr: 0,
        relL2: 0,
        worst: "",
        worstRatio: 0,
        note: "no expected tensors",
      };
    }
    const worst = this.comps.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    const failed = this.comps.filter((c) => !c.ok);
    return {
      name,
      status: failed.length ? "fail" : "pass",
      tensors: this.comps.length,
      maxRelErr: Math.max(...this.comps.map((c) => c.maxRelErr)),
      relL2: Math.max(...this.comps.map((c) => c.relL2)),
      worst: worst.name,
      worstRatio: worst.ratio,
      note: failed.length ? `${failed.length} failed; first: ${failed[0].msg}` : undefined,
    };
  }
}

export function leaf(e: Engine, data: Float32Array, shape: number[]): Tensor {
  const t = e.tensor(data, shape);
  t.requiresGrad = true;
  return t;
}

export async function readGrad(t: Tensor): Promise<Float32Array> {
  if (!t.grad) return new Float32Array(t.size);
  return await t.engine.readF32(t.grad);
}

export function disposeAll(ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) {
    t?.grad?.dispose();
    if (t) t.grad = null;
    t?.dispose();
  }
}
