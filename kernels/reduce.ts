/**
 * Sums and means over one axis, the sum of everything, and the raw column
 * sum used for bias gradients. Every reduction views its input as
 * [outer, A, inner] around the reduced axis and is deterministic: each
 * thread sums a fixed, strided subset in a fixed order, workgroups combine
 * through a fixed tree in workgroup memory, and long reductions run in two
 * (or more) passes over partial sums laid out by slice, never with atomics.
 * The slicing depends only on the shape, so equal inputs give bit-identical
 * results.
 *
 * - inner == 1 (the last axis, and sumAll): one workgroup per row (or per
 *   slice of a long row), 256 threads striding along it, then a 256-way tree.
 * - inner > 1: each workgroup covers 64 consecutive inner positions
 *   (coalesced) × 4 lanes along A over a slice of A; the 4 lanes are combined
 *   in a fixed order, and slices go through a second pass.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeSize, shapeStr, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { fill } from "./elementwise.ts";
import { ENTRY_1D, grid1d, LINEAR_ID } from "./wgsl.ts";

const cache = new Map<string, Kernel>();
function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

/** Rows up to this long are summed by one thread each. */
const SERIAL_MAX = 16;
/** Elements per workgroup slice of a long row (inner == 1). */
const ROW_CHUNK = 8192;
/** Inner positions per workgroup of the column reduction. */
const COLS = 64;

const finish = (acc: boolean, idx: string, v: string) =>
  acc ? `out[${idx}] = out[${idx}] + ${v};` : `out[${idx}] = ${v};`;

/** out[r] (+)= scale·Σ x[o·A + s·chunk + j], r = o·S + s, j < chunk within the row. */
function rowsKernel(acc: boolean): Kernel {
  return getKernel(`rows_${acc}`, () =>
    defineKernel({
      name: `reduce_rows${acc ? "_acc" : ""}`,
      params: { rows: "u32", A: "u32", chunk: "u32", S: "u32", scale: "f32" },
      bindings: { x: "read", out: "rw" },
      code: /* wgsl */ `
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= P.rows) { return; }
  let o = r / P.S;
  let s = r % P.S;
  let start = o * P.A + s * P.chunk;
  let end = o * P.A + min(P.A, (s + 1u) * P.chunk);
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
  var j = start + lid;
  loop {
    if (j + 768u >= end) { break; }
    a0 += x[j]; a1 += x[j + 256u]; a2 += x[j + 512u]; a3 += x[j + 768u];
    j += 1024u;
  }
  loop {
    if (j >= end) { break; }
    a0 += x[j];
    j += 256u;
  }
  red[lid] = (a0 + a1) + (a2 + a3);
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w >> 1u) {
    if (lid < w) { red[lid] = red[lid] + red[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { ${finish(acc, "r", "P.scale * red[0]")} }
}`,
    }));
}

/** out[o] (+)= scale·Σ_j x[o·A + j], one thread per row (short rows). */
function serialKernel(acc: boolean): Kernel {
  return getKernel(`serial_${acc}`, () =>
    defineKernel({
      name: `reduce_serial${acc ? "_acc" : ""}`,
      params: { rows: "u32", A: "u32", scale: "f32" },
      bindings: { x: "read", out: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let o = linear_id(wid, nwg, lid, 256u);
  if (o >= P.rows) { return; }
  var s = 0.0;
  for (var j = 0u; j < P.A; j++) { s += x[o * P.A + j]; }
  ${finish(acc, "o", "P.scale * s")}
}`,
    }));
}

/**
 * x as [O, A, I]; workgroup g = (o, ib, s): out[(o·S + s)·I + i] (+)=
 * scale·Σ_{a in slice s} x[(o·A + a)·I + i] for 64 consecutive i.
 */
function colsKernel(acc: boolean): Kernel {
  return getKernel(`cols_${acc}`, () =>
    defineKernel({
      name: `reduce_cols${acc ? "_acc" : ""}`,
      params: {
        groups: "u32",
        A: "u32",
        I: "u32",
        chunk: "u32",
        S: "u32",
        IB: "u32",
        scale: "f32",
      },
      bindings: { x: "read", out: "rw" },
      code: /* wgsl */ `
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let s = g % P.S;
  let t = g / P.S;
  let ib = t % P.IB;
  let o = t / P.IB;
  let il = lid % ${COLS}u;
  let lane = lid / ${COLS}u;
  let i = ib * ${COLS}u + il;
  let aBeg = s * P.chunk;
  let aEnd = min(P.A, aBeg + P.chunk);
  var s0 = 0.0; var s1 = 0.0;
  if (i < P.I) {
    let step = 4u * P.I;
    var p = (o * P.A + aBeg + lane) * P.I + i;
    var a = aBeg + lane;
    loop {
      if (a + 4u >= aEnd) { break; }
      s0 += x[p]; s1 += x[p + step];
      a += 8u; p += 2u * step;
    }
    if (a < aEnd) { s0 += x[p]; }
  }
  red[lid] = s0 + s1;
  workgroupBarrier();
  if (lane == 0u && i < P.I) {
    let tot = (red[il] + red[il + ${COLS}u]) + (red[il + ${2 * COLS}u] + red[il + ${3 * COLS}u]);
    let idx = (o * P.S + s) * P.I + i;
    ${finish(acc, "idx", "P.scale * tot")}
  }
}`,
    }));
}

/** gx[idx] = scale·g[o·I + i] over x's shape [O, A, I] (the backward of a reduction). */
function expandKernel(): Kernel {
  return getKernel("expand", () =>
    defineKernel({
      name: "reduce_expand",
      params: { n: "u32", AI: "u32", I: "u32", scale: "f32" },
      bindings: { g: "read", out: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let idx = linear_id(wid, nwg, lid, 256u);
  if (idx >= P.n) { return; }
  out[idx] = P.scale * g[(idx / P.AI) * P.I + idx % P.I];
}`,
    }));
}

// ------------------------------------------------------------------ drivers

function groupsGrid(groups: number) {
  return grid1d(groups * 256, 256);
}

/** out[o] (+)= scale·Σ_a x[o, a] over x as [O, A] (A ≥ 1). */
function reduceRows(out: Tensor, x: Tensor, O: number, A: number, scale: number, acc: boolean) {
  const e = x.engine;
  if (A <= SERIAL_MAX) {
    e.run(serialKernel(acc), { x, out }, { rows: O, A, scale }, grid1d(O));
    return;
  }
  const S = O >= 256 ? 1 : Math.ceil(A / ROW_CHUNK);
  if (S === 1) {
    e.run(rowsKernel(acc), { x, out }, { rows: O, A, chunk: A, S: 1, scale }, groupsGrid(O));
    return;
  }
  const part = e.empty([O, S], "f32", `reduction partials [${O},${S}]`);
  e.run(
    rowsKernel(false),
    { x, out: part },
    { rows: O * S, A, chunk: ROW_CHUNK, S, scale: 1 },
    groupsGrid(O * S),
  );
  reduceRows(out, part, O, S, scale, acc);
  part.dispose();
}

/** out[o, i] (+)= scale·Σ_a x[o, a, i] over x as [O, A, I] (A ≥ 1, I > 1). */
function reduceCols(
  out: Tensor,
  x: Tensor,
  O: number,
  A: number,
  I: number,
  scale: number,
  acc: boolean,
) {
  const e = x.engine;
  const IB = Math.ceil(I / COLS);
  let S = 1;
  // few workgroups and a long A: slice A so that ~2048 workgroups run
  if (O * IB < 1024 && A > 256) S = Math.min(Math.ceil(A / 128), Math.ceil(2048 / (O * IB)));
  const chunk = Math.ceil(A / S);
  S = Math.ceil(A / chunk);
  const run = (dst: Tensor, sc: number, ac: boolean) =>
    e.run(
      colsKernel(ac),
      { x, out: dst },
      { groups: O * IB * S, A, I, chunk, S, IB, scale: sc },
      groupsGrid(O * IB * S),
    );
  if (S === 1) {
    run(out, scale, acc);
    return;
  }
  const part = e.empty([O, S, I], "f32", `reduction partials [${O},${S},${I}]`);
  run(part, 1, false);
  reduceCols(out, part, O, S, I, scale, acc);
  part.dispose();
}

/** out (+)= scale·(x summed over A) with x viewed as [O, A, I]; out holds O·I values. */
function reduceInto(
  out: Tensor,
  x: Tensor,
  O: number,
  A: number,
  I: number,
  scale: number,
  acc: boolean,
): void {
  if (O * I === 0) return;
  if (A === 0) {
    if (!acc) fill(out, scale === scale ? 0 : NaN);
    return;
  }
  if (I === 1) reduceRows(out, x, O, A, scale, acc);
  else reduceCols(out, x, O, A, I, scale, acc);
}

function expand(g: Tensor, shape: number[], O: number, A: number, I: number, scale: number) {
  const gx = g.engine.empty(shape);
  const n = O * A * I;
  if (n > 0) g.engine.run(expandKernel(), { g, out: gx }, { n, AI: A * I, I, scale }, grid1d(n));
  return gx;
}

function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  }
  return a;
}

function checkF32(op: string, ...ts: Tensor[]) {
  for (const t of ts) if (t.dtype !== "f32") throw new Error(`${op}: ${t} is not f32`);
}

// ------------------------------------------------------------------ public

/**
 * out[c] (+)= Σ_r x[r, c] (raw, not recorded): the column sums of x viewed as
 * [R, C] with C = out.size (bias gradients). Deterministic.
 */
export function sumRowsInto(out: Tensor, x: Tensor, accumulate: boolean): void {
  checkF32("sumRowsInto", out, x);
  const C = out.size;
  if (C === 0 || x.size % C !== 0) {
    throw new Error(
      `sumRowsInto: x ${shapeStr(x.shape)} is not [R, ${C}] (out ${shapeStr(out.shape)})`,
    );
  }
  reduceInto(out, x, 1, x.size / C, C, 1, accumulate);
}

function reduceOp(name: string, x: Tensor, axis: number, mean: boolean): Tensor {
  checkF32(name, x);
  const a = normAxis(name, axis, x.rank);
  const shape = [...x.shape];
  const O = shapeSize(shape.slice(0, a)), A = shape[a], I = shapeSize(shape.slice(a + 1));
  const scale = mean ? (A ? 1 / A : NaN) : 1;
  const out = x.engine.empty(shape.filter((_, i) => i !== a));
  reduceInto(out, x, O, A, I, scale, false);
  record(name, [x], [out], [], ([g]) => [g ? expand(g, shape, O, A, I, scale) : null]);
  return out;
}

/** Σ over `axis` (negative counts from the end); the axis is dropped. Differentiable. */
export function sum(x: Tensor, axis: number): Tensor {
  return reduceOp("sum", x, axis, false);
}

/** Mean over `axis`; the axis is dropped. Differentiable. */
export function mean(x: Tensor, axis: number): Tensor {
  return reduceOp("mean", x, axis, true);
}

/** Σ of every element, shape [1]; deterministic multi-pass reduction. Differentiable. */
export function sumAll(x: Tensor): Tensor {
  checkF32("sumAll", x);
  const shape = [...x.shape];
  const n = x.size;
  const out = x.engine.empty([1]);
  if (n === 0) fill(out, 0);
  else reduceInto(out, x, 1, n, 1, 1, false);
  record("sumAll", [x], [out], [], ([g]) => [g ? expand(g, shape, 1, n, 1, 1) : null]);
  return out;
}
