/**
 * Test helpers: the shared engine, a seeded RNG, tolerance checks that report
 * the worst element, and central finite differences for CPU references.
 */
import { type Engine, initEngine } from "../tensor/engine.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Random } from "../tensor/random.ts";

export type F64 = Float64Array;

/** Deno.test for GPU code: WebGPU keeps ops and resources alive across tests. */
export function gpuTest(name: string, fn: (e: Engine) => Promise<void> | void): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const e = await initEngine();
      await fn(e);
    },
  });
}

/**
 * Runs `fn` with the kernels compiled as on Mesa's GL path (`on`: workgroup arrays compacted,
 * tensor/wgsl_compact.ts) or as elsewhere (`on` false), then restores the engine's setting,
 * also when `fn` throws.
 */
export async function withCompactWorkgroup<T>(
  e: Engine,
  fn: () => Promise<T>,
  on = true,
): Promise<T> {
  const prev = e.compactWorkgroup;
  e.compactWorkgroup = on;
  try {
    return await fn();
  } finally {
    e.compactWorkgroup = prev;
  }
}

/**
 * The project's seeded PRNG (tensor/random.ts, mulberry32) with test helpers;
 * `normal()` here draws one Box-Muller value per pair of uniforms (no cached
 * spare), which fixes the inputs every test was written against.
 */
export class Rng extends Random {
  override normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /** n normal values rounded to f32, returned as f64 (exactly representable in f32). */
  randn(n: number, std = 1): F64 {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * std;
    return Float64Array.from(a);
  }
  uniform(n: number, lo = -1, hi = 1): F64 {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * this.next();
    return Float64Array.from(a);
  }
}

export interface Tol {
  /** absolute tolerance */
  atol: number;
  /** relative tolerance (per element, of |ref|) */
  rtol: number;
  /** optional bound on ||got-ref|| / ||ref|| */
  relL2?: number;
}

export interface CloseReport {
  maxAbs: number;
  maxRel: number;
  relL2: number;
  worst: number;
}

export function compare(got: ArrayLike<number>, ref: ArrayLike<number>): CloseReport {
  if (got.length !== ref.length) throw new Error(`length ${got.length} vs ${ref.length}`);
  let maxAbs = 0, maxRel = 0, worst = 0, num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    num += d * d;
    den += ref[i] * ref[i];
    if (!(d <= maxAbs)) {
      maxAbs = Number.isNaN(d) ? Infinity : d;
      worst = i;
    }
    const r = d / Math.max(Math.abs(ref[i]), 1e-30);
    if (r > maxRel) maxRel = r;
  }
  return { maxAbs, maxRel, relL2: Math.sqrt(num / Math.max(den, 1e-300)), worst };
}

/** Asserts |got-ref| <= atol + rtol*|ref| everywhere (and the rel. L2 bound if given). */
export function assertClose(
  what: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: Tol,
): CloseReport {
  if (got.length !== ref.length) {
    throw new Error(`${what}: ${got.length} values, expected ${ref.length}`);
  }
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    if (!(d <= tol.atol + tol.rtol * Math.abs(ref[i]))) {
      const r = compare(got, ref);
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${ref[i]} (|d|=${d.toExponential(3)} > ` +
          `atol ${tol.atol} + rtol ${tol.rtol}*|ref|); max abs err ${r.maxAbs.toExponential(3)}`,
      );
    }
  }
  const r = compare(got, ref);
  if (tol.relL2 !== undefined && !(r.relL2 <= tol.relL2)) {
    throw new Error(`${what}: rel. L2 error ${r.relL2.toExponential(3)} > ${tol.relL2}`);
  }
  return r;
}

/**
 * Checks an analytic gradient against central finite differences of a
 * float64 scalar function, at `samples` random coordinates.
 */
export function checkFiniteDiff(
  what: string,
  f: () => number,
  x: F64,
  analytic: ArrayLike<number>,
  opts: { samples?: number; eps?: number; tol?: number; rng?: Rng } = {},
): void {
  const rng = opts.rng ?? new Rng(1234);
  const eps = opts.eps ?? 1e-6;
  const tol = opts.tol ?? 1e-6;
  const n = Math.min(opts.samples ?? 24, x.length);
  const idx = x.length <= n ? [...x.keys()] : Array.from({ length: n }, () => rng.int(x.length));
  let scaleRef = 0;
  for (let i = 0; i < analytic.length; i++) scaleRef = Math.max(scaleRef, Math.abs(analytic[i]));
  for (const i of idx) {
    const x0 = x[i];
    x[i] = x0 + eps;
    const fp = f();
    x[i] = x0 - eps;
    const fm = f();
    x[i] = x0;
    const num = (fp - fm) / (2 * eps);
    const d = Math.abs(num - analytic[i]);
    if (d > tol * Math.max(1, scaleRef)) {
      throw new Error(
        `${what}: finite difference at ${i}: numeric ${num} analytic ${analytic[i]} (|d|=${
          d.toExponential(3)
        })`,
      );
    }
  }
}

/** sum(a*b) in float64 */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export async function readF64(t: Tensor): Promise<F64> {
  return Float64Array.from(await t.engine.read(t));
}

/** Uploads f64 values (rounded to f32) as a tensor that requires grad. */
export function param(e: Engine, data: F64, shape: number[]): Tensor {
  const t = e.tensor(Float32Array.from(data), shape);
  t.requiresGrad = true;
  return t;
}

/** The repository root. */
export const REPO = new URL("..", import.meta.url).pathname;

/**
 * The shared folder beside the checkout (spec, fixtures, data), overridable
 * with BASED_SHARED_DIR.
 */
export const SHARED = Deno.env.get("BASED_SHARED_DIR") ??
  new URL("../../shared/", import.meta.url).pathname;

export const FIXTURES = `${SHARED.replace(/\/$/, "")}/fixtures`;
export const WIKITEXT = `${SHARED.replace(/\/$/, "")}/data/wikitext`;

/**
 * Why a test that reads `../shared/<rel>` cannot run here ("" when it can):
 * the reference fixtures and WikiText are not shipped with the repository, so a
 * bare clone skips those tests (CI has ../shared beside the clone and runs them).
 */
export function sharedMissing(rel: string, probe = ""): string {
  try {
    Deno.statSync(`${SHARED.replace(/\/$/, "")}/${rel}${probe ? `/${probe}` : ""}`);
    return "";
  } catch {
    return `needs ../shared/${rel}, not shipped`;
  }
}

/** A test name with the skip reason appended when `missing` is not empty. */
export function skipName(name: string, missing: string): string {
  return missing ? `${name} [skipped: ${missing}]` : name;
}

const FIXTURES_MISSING = sharedMissing("fixtures", "manifest.json");
const WIKITEXT_MISSING = sharedMissing("data/wikitext", "wikitext-103-v1/wiki.valid.tokens");

/** Whether the reference fixtures are present (tests that read them are skipped otherwise). */
export const HAVE_FIXTURES: boolean = FIXTURES_MISSING === "";
/** Whether the shared WikiText files are present. */
export const HAVE_WIKITEXT: boolean = WIKITEXT_MISSING === "";

/** A GPU test that reads the reference fixtures: skipped (and says so) when they are absent. */
export function fixtureTest(name: string, fn: (e: Engine) => Promise<void> | void): void {
  Deno.test({
    name: skipName(name, FIXTURES_MISSING),
    ignore: !HAVE_FIXTURES,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const e = await initEngine();
      await fn(e);
    },
  });
}

/** A CPU test that reads the reference fixtures: skipped (and says so) when they are absent. */
export function fixtureCpuTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name: skipName(name, FIXTURES_MISSING), ignore: !HAVE_FIXTURES, fn });
}

/** A test that reads the shared WikiText files: skipped (and says so) when they are absent. */
export function wikitextTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name: skipName(name, WIKITEXT_MISSING), ignore: !HAVE_WIKITEXT, fn });
}

// deno-lint-ignore no-explicit-any
type Manifest = { tensors: Record<string, any>; info: Record<string, any> };
let manifestCache: Manifest | null = null;

/** The fixtures' manifest.json (empty tables when the fixtures are absent). */
export function fixtureManifest(): Manifest {
  manifestCache ??= HAVE_FIXTURES
    ? JSON.parse(Deno.readTextFileSync(`${FIXTURES}/manifest.json`))
    : { tensors: {}, info: {} };
  return manifestCache!;
}

/** The manifest's suggested tolerance of an expected tensor, as a Tol. */
export function fixtureTol(name: string): Tol {
  const t = fixtureManifest().tensors[name].tolerance;
  return { atol: t.atol, rtol: t.rtol, relL2: t.rel_l2 };
}
