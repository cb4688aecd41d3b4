/**
 * Float64 CPU references of gemm, matmul and linear, forward and backward.
 * The backward references are written element by element from the
 * definition (not by calling gemm with other flags), so they check the
 * transpose bookkeeping of the GPU ops independently.
 */
export type F64 = Float64Array;

export interface GemmRefOptions {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  bias?: ArrayLike<number>;
  batch?: number;
  strideA?: number;
  strideB?: number;
  strideOut?: number;
  offsetA?: number;
  offsetB?: number;
  offsetOut?: number;
}

/**
 * out = alpha·op(A)·op(B) + beta·out + bias per batch entry. `c0` is the
 * previous out (copied; required when beta ≠ 0; with beta = 0 it is never read,
 * so NaN there does not propagate). Returns the new out (length of c0, or
 * just what the problem covers).
 */
export function gemm(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  o: GemmRefOptions,
  c0?: ArrayLike<number>,
): F64 {
  const { m: M, n: N, k: K } = o;
  const batch = o.batch ?? 1, alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  const sA = o.strideA ?? 0, sB = o.strideB ?? 0, sC = o.strideOut ?? M * N;
  const offA = o.offsetA ?? 0, offB = o.offsetB ?? 0, offC = o.offsetOut ?? 0;
  const len = c0 ? c0.length : offC + (batch - 1) * sC + M * N;
  const out = c0 ? Float64Array.from(c0) : new Float64Array(len);
  for (let z = 0; z < batch; z++) {
    const ab = offA + z * sA, bb = offB + z * sB, cb = offC + z * sC;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) {
          const av = o.transA ? a[ab + p * M + i] : a[ab + i * K + p];
          const bv = o.transB ? b[bb + j * K + p] : b[bb + p * N + j];
          s += av * bv;
        }
        const idx = cb + i * N + j;
        let v = alpha * s;
        if (beta !== 0) v += beta * out[idx];
        if (o.bias) v += o.bias[j];
        out[idx] = v;
      }
    }
  }
  return out;
}

/** Shapes of a matmul operand: [rows, cols] or [batch, rows, cols]. */
export type Shape = readonly number[];

interface MM {
  batch: number;
  M: number;
  N: number;
  K: number;
  a3: boolean;
  b3: boolean;
}

function mmDims(aShape: Shape, bShape: Shape, tA: boolean, tB: boolean): MM {
  const a3 = aShape.length === 3, b3 = bShape.length === 3;
  const [ar, ac] = aShape.slice(-2), [br, bc] = bShape.slice(-2);
  const M = tA ? ac : ar, K = tA ? ar : ac, N = tB ? br : bc;
  if ((tB ? bc : br) !== K) throw new Error("matmul ref: inner sizes differ");
  const batch = a3 ? aShape[0] : b3 ? bShape[0] : 1;
  return { batch, M, N, K, a3, b3 };
}

/** Index of op(A)[z, i, p] in A's storage. */
const aIdx = (d: MM, tA: boolean, z: number, i: number, p: number) =>
  (d.a3 ? z * d.M * d.K : 0) + (tA ? p * d.M + i : i * d.K + p);
/** Index of op(B)[z, p, j] in B's storage. */
const bIdx = (d: MM, tB: boolean, z: number, p: number, j: number) =>
  (d.b3 ? z * d.K * d.N : 0) + (tB ? j * d.K + p : p * d.N + j);

/** op(a)·op(b) with rank-2 operands shared across the batch; out [batch·M·N] (or [M·N]). */
export function matmul(
  a: ArrayLike<number>,
  aShape: Shape,
  b: ArrayLike<number>,
  bShape: Shape,
  transA = false,
  transB = false,
): F64 {
  const d = mmDims(aShape, bShape, transA, transB);
  const out = new Float64Array(d.batch * d.M * d.N);
  for (let z = 0; z < d.batch; z++) {
    for (let i = 0; i < d.M; i++) {
      for (let j = 0; j < d.N; j++) {
        let s = 0;
        for (let p = 0; p < d.K; p++) {
          s += a[aIdx(d, transA, z, i, p)] * b[bIdx(d, transB, z, p, j)];
        }
        out[(z * d.M + i) * d.N + j] = s;
      }
    }
  }
  return out;
}

/** Gradients of matmul for the upstream gradient g: [ga, gb] in a's and b's layouts. */
export function matmulBackward(
  a: ArrayLike<number>,
  aShape: Shape,
  b: ArrayLike<number>,
  bShape: Shape,
  g: ArrayLike<number>,
  transA = false,
  transB = false,
): [F64, F64] {
  const d = mmDims(aShape, bShape, transA, transB);
  const ga = new Float64Array(a.length), gb = new Float64Array(b.length);
  for (let z = 0; z < d.batch; z++) {
    for (let i = 0; i < d.M; i++) {
      for (let j = 0; j < d.N; j++) {
        const gv = g[(z * d.M + i) * d.N + j];
        for (let p = 0; p < d.K; p++) {
          const ai = aIdx(d, transA, z, i, p), bi = bIdx(d, transB, z, p, j);
          ga[ai] += gv * b[bi];
          gb[bi] += gv * a[ai];
        }
      }
    }
  }
  return [ga, gb];
}

/** y = x·Wᵀ + b: x [T, in], w [out, in], bias [out] → y [T, out]. */
export function linear(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  T: number,
  inF: number,
  outF: number,
): F64 {
  const y = new Float64Array(T * outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i] * w[o * inF + i];
      y[t * outF + o] = s;
    }
  }
  return y;
}

/** [gx, gw, gb] of linear for the upstream gradient g [T, out]. */
export function linearBackward(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  g: ArrayLike<number>,
  T: number,
  inF: number,
  outF: number,
): [F64, F64, F64] {
  const gx = new Float64Array(T * inF), gw = new Float64Array(outF * inF);
  const gb = new Float64Array(outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      const gv = g[t * outF + o];
      gb[o] += gv;
      for (let i = 0; i < inF; i++) {
        gx[t * inF + i] += gv * w[o * inF + i];
        gw[o * inF + i] += gv * x[t * inF + i];
      }
    }
  }
  return [gx, gw, gb];
}
