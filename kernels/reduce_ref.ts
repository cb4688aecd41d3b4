/** Float64 CPU references of the reductions, forward and backward. */
export type F64 = Float64Array;

/** [outer, n, inner] around an axis (negative axes count from the end). */
export function around(shape: readonly number[], axis: number): [number, number, number] {
  const a = axis < 0 ? axis + shape.length : axis;
  let O = 1, I = 1;
  for (let i = 0; i < a; i++) O *= shape[i];
  for (let i = a + 1; i < shape.length; i++) I *= shape[i];
  return [O, shape[a], I];
}

/** Σ over `axis`; the result is [outer·inner] (the axis dropped). */
export function sum(x: ArrayLike<number>, shape: readonly number[], axis: number): F64 {
  const [O, A, I] = around(shape, axis);
  const out = new Float64Array(O * I);
  for (let o = 0; o < O; o++) {
    for (let a = 0; a < A; a++) {
      for (let i = 0; i < I; i++) out[o * I + i] += x[(o * A + a) * I + i];
    }
  }
  return out;
}

/** Gradient of sum: g broadcast back along the axis. */
export function sumBackward(g: ArrayLike<number>, shape: readonly number[], axis: number): F64 {
  const [O, A, I] = around(shape, axis);
  const gx = new Float64Array(O * A * I);
  for (let o = 0; o < O; o++) {
    for (let a = 0; a < A; a++) {
      for (let i = 0; i < I; i++) gx[(o * A + a) * I + i] = g[o * I + i];
    }
  }
  return gx;
}

export function mean(x: ArrayLike<number>, shape: readonly number[], axis: number): F64 {
  const A = around(shape, axis)[1];
  return sum(x, shape, axis).map((v) => v / A);
}

export function meanBackward(g: ArrayLike<number>, shape: readonly number[], axis: number): F64 {
  const A = around(shape, axis)[1];
  return sumBackward(g, shape, axis).map((v) => v / A);
}

export function sumAll(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return s;
}

export function sumAllBackward(g: number, n: number): F64 {
  return new Float64Array(n).fill(g);
}

/** Column sums of x viewed as [R, C]. */
export function sumRows(x: ArrayLike<number>, C: number): F64 {
  return sum(x, [x.length / C, C], 0);
}
