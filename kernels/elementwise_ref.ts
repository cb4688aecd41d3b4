/** Float64 CPU references of the elementwise kernels. */
export type F64 = Float64Array;

const map2 = (x: F64, y: F64, f: (a: number, b: number) => number): F64 =>
  x.map((v, i) => f(v, y[i]));

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
export const siluScalar = (x: number): number => x * sigmoid(x);
export const siluGradScalar = (x: number): number => {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
};

export const add = (x: F64, y: F64): F64 => map2(x, y, (a, b) => a + b);
export const sub = (x: F64, y: F64): F64 => map2(x, y, (a, b) => a - b);
export const mul = (x: F64, y: F64): F64 => map2(x, y, (a, b) => a * b);
export const scale = (x: F64, s: number): F64 => x.map((v) => v * s);
export const axpy = (x: F64, y: F64, s: number): F64 => map2(x, y, (a, b) => a + s * b);
export const silu = (x: F64): F64 => x.map(siluScalar);
export const siluBackward = (x: F64, g: F64): F64 => map2(x, g, (a, b) => b * siluGradScalar(a));
export const swiglu = (u: F64, g: F64): F64 => map2(u, g, (a, b) => a * siluScalar(b));
export function swigluBackward(u: F64, g: F64, go: F64): [F64, F64] {
  return [
    go.map((v, i) => v * siluScalar(g[i])),
    go.map((v, i) => v * u[i] * siluGradScalar(g[i])),
  ];
}
