/** Float64 CPU reference of softmax along one axis (row-major, explicit shape). */
export type F64 = Float64Array;

function geometry(shape: readonly number[], axis: number): [number, number, number] {
  const a = axis < 0 ? axis + shape.length : axis;
  const prod = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
  return [prod(shape.slice(0, a)), shape[a], prod(shape.slice(a + 1))];
}

/** y = exp(x − max) / Σ exp(x − max) along `axis`. */
export function softmax(x: F64, shape: readonly number[], axis = -1): F64 {
  const [outer, n, inner] = geometry(shape, axis);
  const y = new Float64Array(x.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => (o * n + j) * inner + i;
      let m = -Infinity;
      for (let j = 0; j < n; j++) m = Math.max(m, x[at(j)]);
      let s = 0;
      for (let j = 0; j < n; j++) s += Math.exp(x[at(j)] - m);
      for (let j = 0; j < n; j++) y[at(j)] = Math.exp(x[at(j)] - m) / s;
    }
  }
  return y;
}

/** gx = y ⊙ (gy − Σ gy⊙y) along `axis`, from the forward output y. */
export function softmaxBackward(y: F64, gy: F64, shape: readonly number[], axis = -1): F64 {
  const [outer, n, inner] = geometry(shape, axis);
  const gx = new Float64Array(y.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => (o * n + j) * inner + i;
      let d = 0;
      for (let j = 0; j < n; j++) d += gy[at(j)] * y[at(j)];
      for (let j = 0; j < n; j++) gx[at(j)] = y[at(j)] * (gy[at(j)] - d);
    }
  }
  return gx;
}
