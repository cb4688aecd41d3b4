/** Float64 CPU reference of the embedding gather and its scatter-add backward. */
export type F64 = Float64Array;

/** out[n, :] = weight[ids[n], :] for weight [V, D]; out is [ids.length, D]. */
export function embedding(weight: ArrayLike<number>, D: number, ids: ArrayLike<number>): F64 {
  const V = weight.length / D;
  const out = new Float64Array(ids.length * D);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!(id >= 0 && id < V)) throw new Error(`embedding ref: id ${id} outside [0, ${V})`);
    for (let d = 0; d < D; d++) out[n * D + d] = weight[id * D + d];
  }
  return out;
}

/** gW[v, :] = Σ_{n: ids[n] = v} g[n, :] (rows never referenced stay 0); gW is [V, D]. */
export function embeddingBackward(
  g: ArrayLike<number>,
  ids: ArrayLike<number>,
  V: number,
  D: number,
): F64 {
  const gw = new Float64Array(V * D);
  for (let n = 0; n < ids.length; n++) {
    for (let d = 0; d < D; d++) gw[ids[n] * D + d] += g[n * D + d];
  }
  return gw;
}
