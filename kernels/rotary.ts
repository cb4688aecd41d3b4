/**
 * Rotary position embedding (flash-attention `flash_attn/layers/rotary.py`), non-interleaved
 * GPT-NeoX halves: with r the rotary dim, x1 = x[0:r/2], x2 = x[r/2:r] and θ = t·inv_freq, out1 =
 * x1·cos θ − x2·sin θ, out2 = x2·cos θ + x1·sin θ; dims ≥ r pass through. Backward: the rotation by
 * −θ.
 *
 * The cos/sin tables come from the host (`rotaryTables`, f32 exactly as
 * flash-attn computes them: WGSL's cos/sin make no accuracy promise outside
 * [−π, π], and positions reach thousands of radians). They are uploaded once
 * per (rotary dim, base) for positions 0..N−1, N grown by doubling when a
 * longer sequence or a later offset needs it, and kept out of scopes; a
 * kernel reads row `offset + l`. One thread per output element.
 */
import { defineKernel, type Engine, type Kernel } from "../tensor/engine.ts";
import { keep, shapeStr, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { rotaryTables } from "./rotary_ref.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, WG } from "./wgsl.ts";

export { rotaryTables };

export interface RotaryOptions {
  /** default 10000 */
  base?: number;
  /** rotated leading dims of each head (even, ≤ Dh); default Dh */
  rotaryDim?: number;
  /** position of the first token (generation with a cache); default 0 */
  offset?: number;
}

let kernel: Kernel | null = null;

/** out[i] for x viewed as [B, L, parts, H, Dh]; parts < nrot are rotated. */
function rotaryKernel(): Kernel {
  kernel ??= defineKernel({
    name: "rotary",
    params: {
      n: "u32",
      Dh: "u32",
      H: "u32",
      parts: "u32",
      L: "u32",
      nrot: "u32",
      half: "u32",
      off: "u32",
      sign: "f32",
    },
    bindings: { x: "read", cs: "read", sn: "read", out: "rw" },
    code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let d = i % P.Dh;
  let q = i / P.Dh;
  let part = (q / P.H) % P.parts;
  let l = (q / (P.H * P.parts)) % P.L;
  var v = x[i];
  if (part < P.nrot && d < 2u * P.half) {
    let j = select(d - P.half, d, d < P.half);
    let c = cs[(P.off + l) * P.half + j];
    let s = P.sign * sn[(P.off + l) * P.half + j];
    if (d < P.half) { v = v * c - x[i + P.half] * s; } else { v = v * c + x[i - P.half] * s; }
  }
  out[i] = v;
}`,
  });
  return kernel;
}

interface Tables {
  cos: Tensor;
  sin: Tensor;
  rows: number;
}

const tableCache = new WeakMap<Engine, Map<string, Tables>>();

/** The cached device tables of (dim, base) covering positions [0, need). */
function deviceTables(e: Engine, dim: number, base: number, need: number): Tables {
  let m = tableCache.get(e);
  if (!m) tableCache.set(e, m = new Map());
  const key = `${dim}|${base}`;
  const have = m.get(key);
  if (have && have.rows >= need) return have;
  let rows = 64;
  while (rows < need) rows *= 2;
  const { cos, sin } = rotaryTables(rows, dim, base, 0);
  const t: Tables = {
    cos: keep(e.tensor(cos, [rows, dim / 2])),
    sin: keep(e.tensor(sin, [rows, dim / 2])),
    rows,
  };
  // a pending backward holds its own references to the old tables
  if (have) {
    have.cos.dispose();
    have.sin.dispose();
  }
  m.set(key, t);
  return t;
}

interface Geometry {
  B: number;
  L: number;
  parts: number;
  nrot: number;
  H: number;
  Dh: number;
}

function run(
  x: Tensor,
  out: Tensor,
  g: Geometry,
  tabs: { cos: Tensor; sin: Tensor },
  half: number,
  off: number,
  sign: number,
): void {
  const n = x.size;
  if (n === 0) return;
  x.engine.run(
    rotaryKernel(),
    { x, cs: tabs.cos, sn: tabs.sin, out },
    { n, Dh: g.Dh, H: g.H, parts: g.parts, L: g.L, nrot: g.nrot, half, off, sign },
    grid1d(n),
  );
}

function apply(op: string, x: Tensor, g: Geometry, opts: RotaryOptions): Tensor {
  if (x.dtype !== "f32") throw new Error(`${op}: ${x} is not f32`);
  const base = opts.base ?? 10000;
  const rd = opts.rotaryDim ?? g.Dh;
  const off = opts.offset ?? 0;
  if (!Number.isInteger(rd) || rd <= 0 || rd % 2 || rd > g.Dh) {
    throw new Error(`${op}: rotaryDim ${rd} must be even and in [2, ${g.Dh}]`);
  }
  if (!Number.isInteger(off) || off < 0) throw new Error(`${op}: offset ${off} is not a position`);
  if (!(base > 0)) throw new Error(`${op}: base ${base} must be positive`);
  const e = x.engine;
  const tabs = deviceTables(e, rd, base, off + g.L);
  const out = e.empty(x.shape);
  run(x, out, g, tabs, rd / 2, off, 1);
  record(op, [x], [out], [tabs.cos, tabs.sin], ([gy], [cs, sn]) => {
    if (!gy) return [null];
    const gx = e.empty(gy.shape);
    run(gy, gx, g, { cos: cs, sin: sn }, rd / 2, off, -1);
    return [gx];
  });
  return out;
}

/**
 * Rotary on the q and k parts of a packed qkv [B, L, 3, H, Dh] (v copied),
 * positions offset..offset+L−1. Differentiable.
 */
export function rotaryQK(qkv: Tensor, opts: RotaryOptions = {}): Tensor {
  if (qkv.rank !== 5 || qkv.shape[2] !== 3) {
    throw new Error(`rotaryQK: qkv ${shapeStr(qkv.shape)} is not [B, L, 3, H, Dh]`);
  }
  const [B, L, , H, Dh] = qkv.shape;
  return apply("rotaryQK", qkv, { B, L, parts: 3, nrot: 2, H, Dh }, opts);
}

/** Rotary on one tensor [B, L, H, Dh] (e.g. q or k at generation time). Differentiable. */
export function rotary(x: Tensor, opts: RotaryOptions = {}): Tensor {
  if (x.rank !== 4) throw new Error(`rotary: x ${shapeStr(x.shape)} is not [B, L, H, Dh]`);
  const [B, L, H, Dh] = x.shape;
  return apply("rotary", x, { B, L, parts: 1, nrot: 1, H, Dh }, opts);
}
