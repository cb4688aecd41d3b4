/**
 * Shared geometry of the linear-attention kernels: tile sizes, the feature
 * index helpers (WGSL), the kernel cache, shape checks and the placeholder
 * bindings.
 *
 * Notation used by the kernels: x̂ = [1, √c·x] (NX = F+1 entries, c = 1/√F).
 * Every Taylor feature is w·x̂_α·x̂_β: φ(q)·φ(k) = 1 + s + s²/2. The chunked
 * view's state GEMMs use the symmetric ("packed") form of the map:
 * the FE = NX(NX+1)/2 = 153 pairs α ≤ β (w = 1/√2 on the diagonal α = β ≥ 1,
 * else 1), padded to FEP = 160. The cumsum view uses the unpacked 273-wide φ
 * of the reference.
 */
import { defineKernel, type Engine, type Kernel } from "../../tensor/engine.ts";
import { BasedError } from "../../errors.ts";
import { keep, shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { fill } from "../elementwise.ts";
import { ENTRY_1D, LINEAR_ID, MAX_GRID } from "../wgsl.ts";

/** Chunk length of the chunked view = row tile of the quadratic view. */
export const CHUNK = 64;
/** Key sub-tile of the row-tile kernels. */
export const TKS = 32;
/** Value columns per workgroup of the state and output kernels. */
export const DV = 64;

export interface Geo {
  F: number;
  /** entries of x̂ = [1, √c x] */
  NX: number;
  /** packed (symmetric) features and their padding to a multiple of 32 */
  FE: number;
  FEP: number;
  /** unpacked features 1+F+F² and their padding to a multiple of 16 */
  FEU: number;
  FEUP: number;
}

export function geo(F: number): Geo {
  const NX = F + 1;
  const FE = (NX * (NX + 1)) / 2;
  const FEU = 1 + F + F * F;
  return { F, NX, FE, FEP: Math.ceil(FE / 32) * 32, FEU, FEUP: Math.ceil(FEU / 16) * 16 };
}

export const f32 = (x: number): string => {
  const s = Math.fround(x).toPrecision(9);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
};

export const unroll = (n: number, f: (i: number) => string, sep = "\n"): string =>
  Array.from({ length: n }, (_, i) => f(i)).join(sep);

/** `v = 1` when the flag says the binding is a placeholder, else `v = arr[idx]` (no stray load). */
export const oneOr = (v: string, arr: string, idx: string, flag: string): string =>
  `if (P.${flag} == 1u) { ${v} = 1.0; } else { ${v} = ${arr}[${idx}]; }`;

/** Constants and the feature-index helpers shared by the kernels of one F. */
export function common(g: Geo): string {
  return /* wgsl */ `
const F: u32 = ${g.F}u;
const NX: u32 = ${g.NX}u;
const NXP: u32 = ${g.NX + 1}u;
const FEP: u32 = ${g.FEP}u;
const FEU: u32 = ${g.FEU}u;
const FEUP: u32 = ${g.FEUP}u;
const SC: f32 = ${f32(Math.pow(g.F, -0.25))};
const RS2: f32 = ${f32(Math.SQRT1_2)};
const SQ2: f32 = ${f32(Math.SQRT2)};

// packed feature e -> (a, b), a <= b, upper triangle of x̂x̂ᵀ row-major; padding -> (NX, NX),
// the zero slot of x̂
fn pair_of(e: u32) -> u32 {
  var a = 0u;
  var r = e;
  loop {
    if (a >= NX) { break; }
    let len = NX - a;
    if (r < len) { return a | ((a + r) << 8u); }
    r -= len;
    a += 1u;
  }
  return NX | (NX << 8u);
}
fn pair_w(ab: u32) -> f32 {
  let a = ab & 255u;
  return select(1.0, RS2, a == (ab >> 8u) && a > 0u);
}
// packed index of the pair {a, b}
fn pidx(a: u32, b: u32) -> u32 {
  let lo = min(a, b);
  let hi = max(a, b);
  return lo * (2u * NX + 1u - lo) / 2u + hi - lo;
}
// unpacked feature e of [1, x/F^¼, vec(xxᵀ)/(√2√F)] -> (a, b) of x̂; weight featu_w
fn featu_ab(e: u32) -> u32 {
  if (e == 0u) { return 0u; }
  if (e <= F) { return e << 8u; }
  if (e >= FEU) { return 0u; }
  let p = e - 1u - F;
  return (p / F + 1u) | ((p % F + 1u) << 8u);
}
fn featu_w(e: u32) -> f32 {
  if (e <= F) { return 1.0; }
  return select(0.0, RS2, e < FEU);
}
`;
}

export const ROW_MASK = /* wgsl */ `
// A = 1 + s + s²/2 (or the value given) where the causal mask keeps (row, key)
fn keep_mask(rows: vec4<u32>, j: u32, L: u32, dir: u32) -> vec4<bool> {
  let ok = (rows < vec4<u32>(L)) & vec4<bool>(j < L);
  if (dir == 0u) { return ok & (vec4<u32>(j) <= rows); }
  return ok & (vec4<u32>(j) >= rows);
}
// key sub-tiles [kt0, kt1) of row tile rt: up to the diagonal (dir 0) or from it (dir 1)
fn key_range(rt: u32, L: u32, dir: u32, diag: u32) -> vec2<u32> {
  let nks = (L + ${TKS - 1}u) / ${TKS}u;
  let per = ${CHUNK / TKS}u;
  if (dir == 0u) {
    return vec2<u32>(select(0u, rt * per, diag == 1u), min(nks, (rt + 1u) * per));
  }
  return vec2<u32>(rt * per, select(nks, min(nks, (rt + 1u) * per), diag == 1u));
}
`;

const cache = new Map<string, Kernel>();

export function cached(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

const dummies = new WeakMap<Engine, Tensor[]>();

/**
 * A tiny tensor bound where a kernel's flag says the binding is unused (index 0
 * for read bindings, 1 for a written one: one buffer may not be bound twice
 * when either binding writes).
 */
export function dummy(e: Engine, which: 0 | 1 = 0): Tensor {
  let ts = dummies.get(e);
  if (!ts || ts.some((t) => t.disposed)) {
    ts = [0, 1].map(() => keep(fill(e.empty([4]), 0)));
    dummies.set(e, ts);
  }
  return ts[which];
}

export interface Dims {
  B: number;
  L: number;
  H: number;
  F: number;
  D: number;
}

export function checkGeometry(d: Dims): Geo {
  if (d.F < 4 || d.F > 16 || d.F % 4 !== 0) {
    throw new BasedError(
      `linear attention: feature_dim ${d.F} is not supported`,
      "use a multiple of 4 between 4 and 16 (Based uses 16)",
    );
  }
  if (d.B * d.H > MAX_GRID) {
    throw new BasedError(`linear attention: B·H = ${d.B * d.H} over ${MAX_GRID}`);
  }
  return geo(d.F);
}

export function dims(q: Tensor, k: Tensor, v: Tensor, featureDim?: number): Dims {
  const bad = (why: string) =>
    new Error(
      `linearAttention: ${why} (q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${
        shapeStr(v.shape)
      })`,
    );
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) throw bad("q, k, v must be [B, L, H, ·]");
  const [B, L, H, F] = q.shape;
  if (k.shape.some((s, i) => s !== q.shape[i])) throw bad("q and k differ in shape");
  if (v.shape[0] !== B || v.shape[1] !== L || v.shape[2] !== H) throw bad("v's [B, L, H] differ");
  if (featureDim !== undefined && featureDim !== F) throw bad(`feature_dim is ${featureDim}`);
  for (const t of [q, k, v]) if (t.dtype !== "f32") throw bad(`${t} is not f32`);
  return { B, L, H, F, D: v.shape[3] };
}

/** go = gy·r, gz = −(gy·y)·r with r = 1/(den + ε), one thread per row. */
export const PREP = defineKernel({
  name: "la_bwd_prep",
  params: { rows: "u32", D: "u32", eps: "f32" },
  bindings: { gy: "read", y: "read", den: "read", go: "rw", gz: "rw" },
  code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.rows) { return; }
  let r = 1.0 / (den[i] + P.eps);
  var d = 0.0;
  for (var c = 0u; c < P.D; c++) {
    let g = gy[i * P.D + c];
    d += g * y[i * P.D + c];
    go[i * P.D + c] = g * r;
  }
  gz[i] = -d * r;
}`,
});

/**
 * One training view of linear attention: the normalised forward (y and den
 * allocated by the caller), its backward from go = gy·r, gz = −(gy·y)·r
 * (r = 1/(den + ε)), and the un-normalised numerator.
 */
export interface View {
  forward(
    d: Dims,
    g: Geo,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    y: Tensor,
    den: Tensor,
    eps: number,
  ): void;
  backward(
    d: Dims,
    g: Geo,
    qkv: [Tensor, Tensor, Tensor],
    go: Tensor,
    gz: Tensor,
    eps: number,
    want: [boolean, boolean, boolean],
  ): (Tensor | null)[];
  numerator(d: Dims, g: Geo, q: Tensor, k: Tensor, v: Tensor, num: Tensor): void;
}
