/**
 * Token embedding (flash-attention `GPT2Embeddings`, without positions): out[n, :] = weight[ids[n],
 * :].
 *
 * Forward: one thread per output element (a gather; row-contiguous reads).
 *
 * Backward: a deterministic scatter-add (no float atomics). The host groups
 * the positions by id (from `hostIds`, which must hold the same values as the
 * `ids` tensor): the sorted unique ids, and for each the positions where it
 * occurs in increasing order (a CSR layout, one u32 buffer). One workgroup per
 * unique id sums its positions' gradient rows in that order (each thread a
 * strided set of columns) and adds the sum into the weight gradient: the
 * parameter's gradient buffer when the weight is a leaf (ACCUMULATED), else a
 * fresh zeroed tensor. Every element's result depends only on the ids and the
 * gradient values, so runs are bit-identical.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { BasedError } from "../errors.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { ACCUMULATED, isGradEnabled, record } from "../tensor/tape.ts";
import { fill } from "./elementwise.ts";
import { ENTRY_1D, grid1d, LINEAR_ID, WG } from "./wgsl.ts";

const cache = new Map<string, Kernel>();
function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

function gatherKernel(): Kernel {
  return getKernel("gather", () =>
    defineKernel({
      name: "embedding_gather",
      params: { n: "u32", D: "u32" },
      bindings: { w: "read", ids: { access: "read", type: "array<i32>" }, out: "rw" },
      code: /* wgsl */ `${LINEAR_ID}
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let i = linear_id(wid, nwg, lid, ${WG}u);
  if (i >= P.n) { return; }
  let row = u32(ids[i / P.D]);
  out[i] = w[row * P.D + i % P.D];
}`,
    }));
}

/**
 * csr = [uniq (U) | offs (U + 1) | pos (N)]; workgroup u: gw[uniq[u], d] +=
 * Σ_{p = offs[u]}^{offs[u+1]−1} g[pos[p], d], positions in increasing order.
 */
function scatterKernel(): Kernel {
  return getKernel("scatter", () =>
    defineKernel({
      name: "embedding_scatter_add",
      params: { U: "u32", D: "u32" },
      bindings: { g: "read", csr: { access: "read", type: "array<u32>" }, gw: "rw" },
      code: /* wgsl */ `
@compute @workgroup_size(${WG})
fn main(${ENTRY_1D}) {
  let u = wid.y * nwg.x + wid.x;
  if (u >= P.U) { return; }
  let row = csr[u];
  let beg = csr[P.U + u];
  let end = csr[P.U + u + 1u];
  let posBase = 2u * P.U + 1u;
  for (var d = lid; d < P.D; d += ${WG}u) {
    var s = 0.0;
    for (var p = beg; p < end; p++) { s += g[csr[posBase + p] * P.D + d]; }
    gw[row * P.D + d] += s;
  }
}`,
    }));
}

/** The CSR grouping of positions by id: [uniq (U) | offs (U + 1) | pos (N)], and U. */
export function groupIds(ids: Int32Array, V: number): { csr: Uint32Array; U: number } {
  const N = ids.length;
  const counts = new Uint32Array(V);
  for (let n = 0; n < N; n++) counts[ids[n]]++;
  let U = 0;
  for (let v = 0; v < V; v++) if (counts[v]) U++;
  const csr = new Uint32Array(2 * U + 1 + N);
  // first free slot of each id inside pos (a counting sort keeps positions increasing)
  const start = new Uint32Array(V);
  let u = 0, off = 0;
  for (let v = 0; v < V; v++) {
    if (!counts[v]) continue;
    csr[u] = v;
    csr[U + u] = off;
    start[v] = off;
    off += counts[v];
    u++;
  }
  csr[2 * U] = off;
  const posBase = 2 * U + 1;
  for (let n = 0; n < N; n++) csr[posBase + start[ids[n]]++] = n;
  return { csr, U };
}

function validate(weight: Tensor, ids: Tensor, hostIds: Int32Array): [number, number] {
  if (weight.rank !== 2 || weight.dtype !== "f32") {
    throw new Error(`embedding: weight ${weight} is not an f32 [V, D] matrix`);
  }
  if (ids.dtype !== "i32") throw new Error(`embedding: ids ${ids} are not i32`);
  if (hostIds.length !== ids.size) {
    throw new Error(`embedding: ${hostIds.length} host ids for ids ${shapeStr(ids.shape)}`);
  }
  const [V, D] = weight.shape;
  for (let n = 0; n < hostIds.length; n++) {
    const id = hostIds[n];
    if (id < 0 || id >= V) {
      const at = ids.rank > 1 ? ` (index [${unravel(n, ids.shape).join(", ")}])` : "";
      throw new BasedError(
        `embedding: token id ${id} at position ${n}${at} is outside the vocabulary of size ${V}`,
        "the tokenizer and model.config.vocab_size disagree, or the token cache is corrupt",
      );
    }
  }
  return [V, D];
}

function unravel(n: number, shape: readonly number[]): number[] {
  const idx: number[] = [];
  for (let a = shape.length - 1; a >= 0; a--) {
    idx.unshift(n % shape[a]);
    n = Math.floor(n / shape[a]);
  }
  return idx;
}

/**
 * out[..., :] = weight[ids[...], :] for weight [V, D] and i32 ids of any
 * shape; out is [...ids.shape, D]. `hostIds` are the same ids on the host:
 * they are validated (an id outside [0, V) throws a BasedError) and grouped
 * for the deterministic backward.
 */
export function embedding(weight: Tensor, ids: Tensor, hostIds: Int32Array): Tensor {
  const [V, D] = validate(weight, ids, hostIds);
  const e = weight.engine;
  const N = ids.size;
  const out = e.empty([...ids.shape, D]);
  if (N * D > 0) e.run(gatherKernel(), { w: weight, ids, out }, { n: N * D, D }, grid1d(N * D));
  if (!isGradEnabled() || !weight.requiresGrad) return out;
  const { csr, U } = groupIds(hostIds, V);
  const csrT = e.tensor(csr, [csr.length], "u32");
  record("embedding", [weight], [out], [csrT], ([g], [cs], acc) => {
    if (!g) return [null];
    const into = acc[0];
    let gw = into;
    if (!gw) {
      gw = e.empty([V, D]);
      fill(gw, 0);
    }
    if (U > 0 && D > 0) e.run(scatterKernel(), { g, csr: cs, gw }, { U, D }, grid1d(U, 1));
    return [into ? ACCUMULATED : gw];
  });
  csrT.dispose();
  return out;
}
