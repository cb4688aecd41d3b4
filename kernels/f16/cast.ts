/**
 * Casts between f32 and f16 (mixed precision). f16 tensors are stored packed,
 * two values to a 32-bit word (element 2i in the low half). The conversion is
 * done in integer arithmetic: round to nearest, ties to even, overflow (65520
 * and above) to ±Inf, subnormals kept, NaN kept NaN. WGSL leaves the rounding
 * direction of f32 → f16 conversions and the result of out-of-range ones to
 * the implementation; these casts are exact to IEEE on every adapter (and
 * agree bit for bit with tensor/f16.ts on the host), so an overflow is always
 * an Inf that the loss scaler sees.
 *
 * Casts into f16 can take the loss scaler's state (u32 words, `SCALER`):
 * `flag` sets its found-inf word when an output is Inf or NaN (the step is
 * then skipped; no readback), `scaled` multiplies by its loss scale first
 * (exact: the scale is a power of two).
 */
import { type BindingSpec, defineKernel, type Kernel } from "../../tensor/engine.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "../wgsl.ts";

/** The loss scaler's state words (optim/scaler.ts owns it; casts read the scale, set found-inf). */
export const SCALER = {
  /** the loss scale, f32 bits */
  scale: 0,
  /** clean steps since the scale last changed */
  growth: 1,
  /** 1 when a flagged cast produced Inf/NaN since the last step's finish */
  foundInf: 2,
  /** steps skipped in total */
  skipped: 3,
  /** steps skipped in a row (0 after a clean step) */
  consecutive: 4,
  words: 8,
} as const;

/** WGSL: f32 → f16 bits (nearest even) and f16 bits → f32 (exact), in integer operations. */
export const F16_WGSL = /* wgsl */ `
fn f16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) { return sign | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u); }
  if (a >= 0x477ff000u) { return sign | 0x7c00u; }
  if (a >= 0x38800000u) {
    let r = a - 0x38000000u;
    return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
  }
  if (a < 0x33000000u) { return sign; }
  let e = a >> 23u;
  let m = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;
  var q = m >> shift;
  let rem = m & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u) == 1u)) { q = q + 1u; }
  return sign | q;
}
fn f16_value(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8;
    return select(v, -v, sign != 0u);
  }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
`;

const kernels = new Map<string, Kernel>();

function toF16Kernel(flag: boolean, scaled: boolean): Kernel {
  const key = `to16_${flag}_${scaled}`;
  let k = kernels.get(key);
  if (k) return k;
  const bindings: Record<string, BindingSpec> = {
    x: { access: "read" },
    y: { access: "rw", type: "array<u32>" },
  };
  if (flag || scaled) bindings.st = { access: "rw", type: "array<atomic<u32>>" };
  k = defineKernel({
    name: `cast_f32_f16${scaled ? "_scaled" : ""}${flag ? "_flag" : ""}`,
    params: { n: "u32", nw: "u32", off: "u32" },
    bindings,
    code: /* wgsl */ `${F16_WGSL}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let w = linear_id(wid, nwg, lid, 256u);
  if (w >= P.nw) { return; }
  let i = 2u * w;
  let two = i + 1u < P.n;
  var a = x[P.off + i];
  var b = 0.0;
  if (two) { b = x[P.off + i + 1u]; }
  ${
      scaled
        ? `let s = bitcast<f32>(atomicLoad(&st[${SCALER.scale}]));
  a = a * s;
  b = b * s;`
        : ""
    }
  let ha = f16_bits(a);
  let hb = select(0u, f16_bits(b), two);
  y[w] = ha | (hb << 16u);
  ${
      flag
        ? `if ((ha & 0x7c00u) == 0x7c00u || (hb & 0x7c00u) == 0x7c00u) {
    atomicStore(&st[${SCALER.foundInf}], 1u);
  }`
        : ""
    }
}`,
  });
  kernels.set(key, k);
  return k;
}

const TO_F32 = defineKernel({
  name: "cast_f16_f32",
  params: { n: "u32", off: "u32" },
  bindings: { x: { access: "read", type: "array<u32>" }, y: "rw" },
  code: /* wgsl */ `${F16_WGSL}${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.n) { return; }
  let j = P.off + i;
  y[i] = f16_value((x[j >> 1u] >> (16u * (j & 1u))) & 0xffffu);
}`,
});

export interface CastOptions {
  /** the loss scaler's state (u32 [SCALER.words]); needed by `flag` and `scaled` */
  state?: Tensor | null;
  /** set state's found-inf word when an output is Inf/NaN */
  flag?: boolean;
  /** multiply by state's loss scale before rounding */
  scaled?: boolean;
  /** write here (f16, at least `count` elements) instead of a new tensor */
  out?: Tensor;
  /** element range of x to cast (default: all) */
  offset?: number;
  count?: number;
}

/** x (f32) rounded to f16, nearest even. Raw (not recorded). */
export function castToF16(x: Tensor, opts: CastOptions = {}): Tensor {
  if (x.dtype !== "f32") throw new Error(`castToF16: ${x} is not f32`);
  const off = opts.offset ?? 0, n = opts.count ?? x.size - off;
  if (off < 0 || n < 0 || off + n > x.size) throw new Error(`castToF16: range beyond ${x}`);
  const flag = !!opts.flag, scaled = !!opts.scaled;
  if ((flag || scaled) && !opts.state) throw new Error("castToF16: flag/scaled need the state");
  const y = opts.out ?? x.engine.empty(opts.count === undefined ? x.shape : [n], "f16");
  if (y.dtype !== "f16" || y.size < n) throw new Error(`castToF16: out ${y} is not f16 [>=${n}]`);
  if (y.byteOffset % 4) throw new Error(`castToF16: out ${y} is not word-aligned`);
  const nw = Math.ceil(n / 2);
  const bind: Record<string, Tensor> = { x, y };
  if (flag || scaled) bind.st = opts.state!;
  x.engine.run(toF16Kernel(flag, scaled), bind, { n, nw, off }, grid1d(nw));
  return y;
}

/** x (f16) widened to f32 (exact). `offset`/`count` select an element range of x. */
export function castToF32(x: Tensor, opts: { out?: Tensor; offset?: number; count?: number } = {}) {
  if (x.dtype !== "f16") throw new Error(`castToF32: ${x} is not f16`);
  if (x.byteOffset % 4) throw new Error(`castToF32: ${x} is not word-aligned`);
  const off = opts.offset ?? 0, n = opts.count ?? x.size - off;
  if (off < 0 || n < 0 || off + n > x.size) throw new Error(`castToF32: range beyond ${x}`);
  const y = opts.out ?? x.engine.empty(opts.count === undefined ? x.shape : [n], "f32");
  if (y.dtype !== "f32" || y.size < n) throw new Error(`castToF32: out ${y} is not f32 [>=${n}]`);
  x.engine.run(TO_F32, { x, y }, { n, off }, grid1d(n));
  return y;
}
