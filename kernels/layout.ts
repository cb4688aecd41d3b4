/**
 * Layout ops: reshape (a view), permute / transpose, narrow, concat and split
 * (contiguous copies). Every copy is one strided-copy primitive: a shape and,
 * for source and destination, an element offset and per-axis strides. Before
 * launching, size-1 axes are dropped and axes that are adjacent in both
 * layouts are merged, so a last-axis narrow of [B, L, 4096] becomes a 2-D
 * copy [B·L, 2048] with unit inner stride (coalesced, and vec4 when every
 * stride and the inner size allow). A permute that moves the innermost axis
 * goes through a 32×32 shared-memory tile so that reads and writes are both
 * coalesced. Copies move raw 32-bit words, so every dtype works.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { resolveShape, shapeSize, shapeStr, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, MAX_GRID } from "./wgsl.ts";

/** Most axes a copy may have after merging (permute allows rank 5, so 5 suffice). */
const MAX_DIMS = 6;
/** Tile edge of the transposing copy. */
const TILE = 32;

function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  }
  return a;
}

/** Row-major strides of a shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** A strided region of a tensor, in elements. */
interface Region {
  t: Tensor;
  offset: number;
  strides: number[];
}

/**
 * Drops size-1 axes and merges neighbouring axes that are contiguous with
 * each other in every region. Returns the reduced shape and strides.
 */
function simplify(shape: readonly number[], strides: number[][]): [number[], number[][]] {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1) continue;
    const k = sh.length - 1;
    if (k >= 0 && strides.every((s, r) => st[r][k] === s[i] * shape[i])) {
      sh[k] *= shape[i];
      strides.forEach((s, r) => (st[r][k] = s[i]));
    } else {
      sh.push(shape[i]);
      strides.forEach((s, r) => st[r].push(s[i]));
    }
  }
  if (sh.length === 0) {
    sh.push(1);
    st.forEach((s) => s.push(1));
  }
  return [sh, st];
}

const cache = new Map<string, Kernel>();

function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

const dimParams = (d: number, names: string[]): Record<string, "u32"> => {
  const p: Record<string, "u32"> = {};
  for (let i = 0; i < d; i++) for (const n of names) p[`${n}${i}`] = "u32";
  return p;
};

/**
 * dst[doff + Σ c_i·d_i] = src[soff + Σ c_i·s_i] over a D-axis shape (V = 1 or
 * 4 words per thread); `src` absent: fills with the word P.val.
 */
function copyKernel(dims: number, vec: number, fill: boolean): Kernel {
  return getKernel(`copy${dims}_${vec}_${fill}`, () => {
    const ty = vec === 4 ? "vec4<u32>" : "u32";
    const bindings: Record<string, { access: "read" | "rw"; type: string }> = {};
    if (!fill) bindings.src = { access: "read", type: `array<${ty}>` };
    bindings.dst = { access: "rw", type: `array<${ty}>` };
    let idx = "";
    for (let i = dims - 1; i >= 1; i--) {
      idx += `  { let c = r % P.n${i}; r = r / P.n${i}; so += c * P.s${i}; dn += c * P.d${i}; }\n`;
    }
    idx += "  so += r * P.s0; dn += r * P.d0;\n";
    return defineKernel({
      name: fill ? `layout_fill${dims}_v${vec}` : `layout_copy${dims}_v${vec}`,
      params: {
        total: "u32",
        soff: "u32",
        doff: "u32",
        val: "u32",
        ...dimParams(dims, ["n", "s", "d"]),
      },
      bindings,
      code: `${LINEAR_ID}
@compute @workgroup_size(256)
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, 256u);
  if (i >= P.total) { return; }
  var r = i;
  var so = P.soff;
  var dn = P.doff;
${idx}  ${fill ? `dst[dn] = ${ty}(P.val);` : "dst[dn] = src[so];"}
}`,
    });
  });
}

/**
 * Transposing copy: axis q (the destination's innermost, unit stride there)
 * and axis p (unit stride in the source) are tiled 32×32 through shared
 * memory; the other `nb` axes are batch axes.
 */
function tileKernel(nb: number): Kernel {
  return getKernel(`tile${nb}`, () => {
    let idx = "";
    for (let i = nb - 1; i >= 0; i--) {
      idx += `  { let c = r % P.n${i}; r = r / P.n${i}; so += c * P.s${i}; dn += c * P.d${i}; }\n`;
    }
    return defineKernel({
      name: `layout_tile${nb}`,
      params: {
        groups: "u32",
        tq: "u32",
        tp: "u32",
        nq: "u32",
        np: "u32",
        sq: "u32",
        dp: "u32",
        soff: "u32",
        doff: "u32",
        ...dimParams(nb, ["n", "s", "d"]),
      },
      bindings: {
        src: { access: "read", type: "array<u32>" },
        dst: { access: "rw", type: "array<u32>" },
      },
      code: `
var<workgroup> tile: array<array<u32, ${TILE + 1}>, ${TILE}>;
@compute @workgroup_size(${TILE}, 8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= P.groups) { return; }
  let bq = (g % P.tq) * ${TILE}u;
  var r = g / P.tq;
  let bp = (r % P.tp) * ${TILE}u;
  r = r / P.tp;
  var so = P.soff;
  var dn = P.doff;
${idx}  for (var j = 0u; j < ${TILE}u; j += 8u) {
    let q = bq + l.y + j;
    let p = bp + l.x;
    if (q < P.nq && p < P.np) { tile[l.y + j][l.x] = src[so + q * P.sq + p]; }
  }
  workgroupBarrier();
  for (var j = 0u; j < ${TILE}u; j += 8u) {
    let p = bp + l.y + j;
    let q = bq + l.x;
    if (q < P.nq && p < P.np) { dst[dn + p * P.dp + q] = tile[l.x][l.y + j]; }
  }
}`,
    });
  });
}

/** Launches one strided copy (src present) or fill (src null) over `shape`. */
function stridedCopy(
  dst: Region,
  src: Region | null,
  shape: readonly number[],
  fillWord = 0,
): void {
  const total = shapeSize(shape);
  if (total === 0) return;
  const regions = src ? [src, dst] : [dst];
  const [sh, st] = simplify(shape, regions.map((r) => r.strides));
  const sStr = src ? st[0] : sh.map(() => 0);
  const dStr = st[regions.length - 1];
  const D = sh.length;
  if (D > MAX_DIMS) throw new Error(`layout: ${D} axes after merging (at most ${MAX_DIMS})`);
  const e = dst.t.engine;
  const words: Record<string, number> = {};

  // transposing copy: the innermost destination axis is not the source's unit-stride axis
  if (src && dStr[D - 1] === 1 && sStr[D - 1] !== 1) {
    const p = sStr.indexOf(1);
    if (p >= 0 && dStr[p] !== 1 && sh[p] >= 8 && sh[D - 1] >= 8) {
      const batch = [...sh.keys()].filter((i) => i !== p && i !== D - 1);
      const tq = Math.ceil(sh[D - 1] / TILE), tp = Math.ceil(sh[p] / TILE);
      let groups = tq * tp;
      batch.forEach((a, i) => {
        words[`n${i}`] = sh[a];
        words[`s${i}`] = sStr[a];
        words[`d${i}`] = dStr[a];
        groups *= sh[a];
      });
      const grid: [number, number] = groups <= MAX_GRID
        ? [groups, 1]
        : [MAX_GRID, Math.ceil(groups / MAX_GRID)];
      e.run(tileKernel(batch.length), { src: src.t, dst: dst.t }, {
        ...words,
        groups,
        tq,
        tp,
        nq: sh[D - 1],
        np: sh[p],
        sq: sStr[D - 1],
        dp: dStr[p],
        soff: src.offset,
        doff: dst.offset,
      }, grid);
      return;
    }
  }

  const vecOk = dStr[D - 1] === 1 && (!src || sStr[D - 1] === 1) && sh[D - 1] % 4 === 0 &&
    dst.offset % 4 === 0 && dst.t.size % 4 === 0 &&
    (!src || (src.offset % 4 === 0 && src.t.size % 4 === 0)) &&
    sStr.slice(0, D - 1).every((s) => s % 4 === 0) &&
    dStr.slice(0, D - 1).every((s) => s % 4 === 0);
  const v = vecOk ? 4 : 1;
  for (let i = 0; i < D; i++) {
    words[`n${i}`] = i === D - 1 ? sh[i] / v : sh[i];
    words[`s${i}`] = i === D - 1 ? sStr[i] : sStr[i] / v;
    words[`d${i}`] = i === D - 1 ? dStr[i] : dStr[i] / v;
  }
  const n = total / v;
  const k = copyKernel(D, v, !src);
  e.run(
    k,
    src ? { src: src.t, dst: dst.t } : { dst: dst.t },
    { ...words, total: n, soff: (src?.offset ?? 0) / v, doff: dst.offset / v, val: fillWord },
    grid1d(n),
  );
}

// ------------------------------------------------------------ raw (non-recording) helpers

function permuteRaw(x: Tensor, perm: readonly number[]): Tensor {
  const xs = contiguousStrides(x.shape);
  const shape = perm.map((p) => x.shape[p]);
  const out = x.engine.empty(shape, x.dtype);
  stridedCopy(
    { t: out, offset: 0, strides: contiguousStrides(shape) },
    { t: x, offset: 0, strides: perm.map((p) => xs[p]) },
    shape,
  );
  return out;
}

/** [outer, n, inner] view of a shape around `axis`. */
function around(shape: readonly number[], axis: number): [number, number, number] {
  return [
    shapeSize(shape.slice(0, axis)),
    shape[axis],
    shapeSize(shape.slice(axis + 1)),
  ];
}

function narrowRaw(x: Tensor, axis: number, start: number, length: number): Tensor {
  const [outer, n, inner] = around(x.shape, axis);
  const shape = [...x.shape];
  shape[axis] = length;
  const out = x.engine.empty(shape, x.dtype);
  stridedCopy(
    { t: out, offset: 0, strides: [length * inner, inner, 1] },
    { t: x, offset: start * inner, strides: [n * inner, inner, 1] },
    [outer, length, inner],
  );
  return out;
}

/**
 * A new tensor of `shape` built from consecutive slabs along `axis`: each
 * part's source is copied in, or the slab is zero-filled when it is null.
 */
function assemble(
  shape: readonly number[],
  axis: number,
  parts: { len: number; src: Tensor | null }[],
  like: Tensor,
): Tensor {
  const out = like.engine.empty(shape, like.dtype);
  const [outer, n, inner] = around(shape, axis);
  let start = 0;
  for (const { len, src } of parts) {
    const dst: Region = { t: out, offset: start * inner, strides: [n * inner, inner, 1] };
    const s: Region | null = src ? { t: src, offset: 0, strides: [len * inner, inner, 1] } : null;
    stridedCopy(dst, s, [outer, len, inner]);
    start += len;
  }
  if (start !== n) throw new Error(`assemble: parts cover ${start} of ${n}`);
  return out;
}

// ------------------------------------------------------------ differentiable ops

/** A view of x with another shape (one -1 allowed); no copy. Backward reshapes back. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const s = resolveShape(shape, x.size);
  const inShape = [...x.shape];
  const out = x.view(s);
  record("reshape", [x], [out], [], ([g]) => [g ? g.view(inShape) : null]);
  return out;
}

/** out = x with axes reordered: out.shape[i] = x.shape[perm[i]] (rank ≤ 5), contiguous copy. */
export function permute(x: Tensor, perm: number[]): Tensor {
  const r = x.rank;
  if (r > 5) throw new Error(`permute: rank ${r} > 5`);
  const p = perm.map((a) => normAxis("permute", a, r));
  if (p.length !== r || new Set(p).size !== r) {
    throw new Error(`permute: ${shapeStr(perm)} is not a permutation of ${r} axes`);
  }
  const inv = new Array<number>(r);
  p.forEach((a, i) => (inv[a] = i));
  const out = permuteRaw(x, p);
  record("permute", [x], [out], [], ([g]) => [g ? permuteRaw(g, inv) : null]);
  return out;
}

/** Swaps two axes (contiguous copy). */
export function transpose(x: Tensor, d0: number, d1: number): Tensor {
  const a = normAxis("transpose", d0, x.rank), b = normAxis("transpose", d1, x.rank);
  const perm = [...x.shape.keys()];
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/** x[..., start:start+length, ...] along `axis` (contiguous copy). */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normAxis("narrow", axis, x.rank);
  const n = x.shape[a];
  if (
    !Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 ||
    start + length > n
  ) {
    throw new Error(`narrow: [${start}, ${start + length}) outside axis ${a} of ${x}`);
  }
  const shape = [...x.shape];
  const out = narrowRaw(x, a, start, length);
  record("narrow", [x], [out], [], ([g]) => [
    g
      ? assemble(shape, a, [
        { len: start, src: null },
        { len: length, src: g },
        { len: n - start - length, src: null },
      ], g)
      : null,
  ]);
  return out;
}

/** Joins tensors along `axis` (all other axes equal). */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error("concat: no tensors");
  const r = xs[0].rank;
  const a = normAxis("concat", axis, r);
  for (const x of xs) {
    if (
      x.rank !== r || x.dtype !== xs[0].dtype ||
      x.shape.some((d, i) => i !== a && d !== xs[0].shape[i])
    ) {
      throw new Error(`concat: shapes ${xs.map((t) => shapeStr(t.shape)).join(", ")} along ${a}`);
    }
  }
  const sizes = xs.map((x) => x.shape[a]);
  const shape = [...xs[0].shape];
  shape[a] = sizes.reduce((s, v) => s + v, 0);
  const out = assemble(shape, a, xs.map((x, i) => ({ len: sizes[i], src: x })), xs[0]);
  const need = xs.map((x) => x.requiresGrad);
  record("concat", xs, [out], [], ([g]) => {
    if (!g) return xs.map(() => null);
    let start = 0;
    return sizes.map((len, i) => {
      const gi = need[i] ? narrowRaw(g, a, start, len) : null;
      start += len;
      return gi;
    });
  });
  return out;
}

/** Splits x along `axis` into pieces of `sizes` (one node, one output per piece). */
export function split(x: Tensor, axis: number, sizes: number[]): Tensor[] {
  const a = normAxis("split", axis, x.rank);
  if (
    sizes.some((s) => !Number.isInteger(s) || s < 0) ||
    sizes.reduce((s, v) => s + v, 0) !== x.shape[a]
  ) {
    throw new Error(`split: sizes ${shapeStr(sizes)} do not add up to axis ${a} of ${x}`);
  }
  const shape = [...x.shape];
  let start = 0;
  const outs = sizes.map((len) => {
    const o = narrowRaw(x, a, start, len);
    start += len;
    return o;
  });
  record("split", [x], outs, [], (gs) => [
    assemble(shape, a, sizes.map((len, i) => ({ len, src: gs[i] })), gs.find((g) => g)!),
  ]);
  return outs;
}
