/** Float64 CPU references of the layout ops (row-major arrays with explicit shapes). */
export type F64 = Float64Array;

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** out[i0..ik] = x[index with out axis j at input axis perm[j]]; out.shape[j] = shape[perm[j]]. */
export function permute(x: F64, shape: readonly number[], perm: readonly number[]): F64 {
  const outShape = perm.map((p) => shape[p]);
  const xs = strides(shape);
  const out = new Float64Array(x.length);
  const idx = new Array<number>(perm.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let j = 0; j < perm.length; j++) src += idx[j] * xs[perm[j]];
    out[o] = x[src];
    for (let j = perm.length - 1; j >= 0; j--) {
      if (++idx[j] < outShape[j]) break;
      idx[j] = 0;
    }
  }
  return out;
}

export function permuteBackward(g: F64, shape: readonly number[], perm: readonly number[]): F64 {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return permute(g, perm.map((p) => shape[p]), inv);
}

function around(shape: readonly number[], axis: number): [number, number, number] {
  return [size(shape.slice(0, axis)), shape[axis], size(shape.slice(axis + 1))];
}

export function narrow(
  x: F64,
  shape: readonly number[],
  axis: number,
  start: number,
  len: number,
): F64 {
  const [outer, n, inner] = around(shape, axis);
  const out = new Float64Array(outer * len * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < len; j++) {
      for (let i = 0; i < inner; i++) {
        out[(o * len + j) * inner + i] = x[(o * n + start + j) * inner + i];
      }
    }
  }
  return out;
}

/** The gradient of narrow: g placed into a zero tensor of the input's shape. */
export function narrowBackward(
  g: F64,
  shape: readonly number[],
  axis: number,
  start: number,
  len: number,
): F64 {
  const [outer, n, inner] = around(shape, axis);
  const out = new Float64Array(size(shape));
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < len; j++) {
      for (let i = 0; i < inner; i++) {
        out[(o * n + start + j) * inner + i] = g[(o * len + j) * inner + i];
      }
    }
  }
  return out;
}

/** Concatenation along `axis`; `shapes[i]` is the shape of xs[i]. */
export function concat(xs: F64[], shapes: readonly number[][], axis: number): F64 {
  const sizes = shapes.map((sh) => sh[axis]);
  const outShape = [...shapes[0]];
  outShape[axis] = sizes.reduce((s, v) => s + v, 0);
  return splitBackward(xs, outShape, axis, sizes);
}

export function split(x: F64, shape: readonly number[], axis: number, sizes: number[]): F64[] {
  let start = 0;
  return sizes.map((len) => {
    const o = narrow(x, shape, axis, start, len);
    start += len;
    return o;
  });
}

/** The gradient of split: the output gradients concatenated, zeros for missing ones. */
export function splitBackward(
  gs: (F64 | null)[],
  shape: readonly number[],
  axis: number,
  sizes: number[],
): F64 {
  const out = new Float64Array(size(shape));
  let start = 0;
  gs.forEach((g, k) => {
    if (g) {
      const part = narrowBackward(g, shape, axis, start, sizes[k]);
      for (let i = 0; i < out.length; i++) out[i] += part[i];
    }
    start += sizes[k];
  });
  return out;
}
