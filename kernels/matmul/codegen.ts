/**
 * WGSL generator for the tiled GEMM. One workgroup computes a BM×BN tile of
 * `out`; each thread a TM×TN register tile held in TM·TN/4 vec4
 * accumulators. The K loop walks BK-deep tiles of A and B staged in
 * workgroup memory as [k][m] and [k][n] (vec4 rows), so the inner loop is the
 * same for every transpose combination: per k, TM/4 + TN/4 vec4 reads and
 * TM·TN/4 vec4 FMAs, fully unrolled with constant indices (the generated
 * code has no private arrays; the workgroup arrays' outer index is a
 * constant and the inner one loop-invariant, so their bounds clamps hoist).
 *
 * Only the loaders differ per transpose: a tile whose contiguous global axis
 * is K (A untransposed, B transposed) is read along K and stored transposed
 * (scalar stores into a padded row, ≤ 2-way bank conflicts); the others are
 * stored as they are read. Global reads are vec4 when the contiguous extent
 * and every offset and stride are multiples of 4, else scalar. Every global
 * read is bounds-checked (zero outside), every store too, so any M, N, K ≥ 1
 * works.
 *
 * With `stages: 2` the tiles are double-buffered (two workgroup arrays, the
 * K loop unrolled by two so each has constant names): the next tile is read
 * into registers while the current one is multiplied, then stored to the
 * other buffer; one barrier per tile. Split-K is a host-side matter: slice z
 * of the grid covers K range [s·kSplit, (s+1)·kSplit) and writes its own
 * output slab (strideOut), which a separate pass sums in a fixed order.
 *
 * f16 inputs (`MatmulVariant.f16`): A and B are f16 in global and workgroup
 * memory (vec4<f16> rows: half the bytes of every load and shared read); the
 * inner loop is the same with packed f16 FMAs (vec4<f16>, two HFMA2 each)
 * into f16 partial sums, which are added into the f32 accumulators every
 * `flush` products along K (config.flush; default F16_FLUSH) and at the end.
 * The output, bias, alpha and beta stay f32. The flush length bounds the
 * error: dev/f16_flush_error.ts measures it against float64 (docs in
 * BENCHMARKS.md); 16-64 stay under the error of bf16 input rounding.
 *
 * The tile configurations and their checks are in tile_config.ts (re-exported
 * here).
 */
import { F16_FLUSH, type MatmulConfig, type MatmulVariant, validateConfig } from "./tile_config.ts";

export type { MatmulConfig, MatmulVariant } from "./tile_config.ts";
export {
  configName,
  configSharedBytes,
  configThreads,
  F16_FLUSH,
  F16_FLUSHES,
  GEMM_PARAMS,
  validateConfig,
  variantName,
} from "./tile_config.ts";

/** One global-to-shared loader (A or B). */
interface LoaderSpec {
  /** binding name and smem array prefix */
  src: "A" | "B";
  sm: "As" | "Bs";
  /** tile rows / cols in global memory order (cols contiguous) */
  rows: number;
  cols: number;
  /** true when the contiguous global axis is K (stored transposed into [k][mn]) */
  kContig: boolean;
  vec: 1 | 4;
  /** element type: f32 or f16 */
  el: "f32" | "f16";
  /** WGSL of the M/N bound and the tile origin along M/N */
  bound: string;
  origin: string;
  ld: string;
}

function loaderCode(L: LoaderSpec, NT: number) {
  const p = L.src.toLowerCase();
  const V = L.vec;
  const cv = L.cols / V;
  const total = L.rows * cv;
  const slots = Math.ceil(total / NT);
  // shared: every slot reads the same column, rows `rs` apart (all configs of interest), so the
  // per-slot indices are the first slot's plus constants (fewer live registers)
  const shared = NT % cv === 0 && total % NT === 0;
  const rs = NT / cv;
  const ty = V === 4 ? `vec4<${L.el}>` : L.el;
  const decl: string[] = [];
  const setup: string[] = [];
  const load: string[] = [];
  const store: string[] = [];
  setup.push(`let ${p}ldv = ${L.ld} / ${V}u;`);
  if (shared) {
    setup.push(`let ${p}gr = lid / ${cv}u;`, `let ${p}gc = (lid % ${cv}u) * ${V}u;`);
    if (L.kContig) setup.push(`let ${p}pm4 = ${p}gr / 4u;`, `let ${p}pmc = ${p}gr % 4u;`);
    else setup.push(`let ${p}pm4 = ${p}gc / 4u;`, `let ${p}pmc = ${p}gc % 4u;`);
  }
  for (let r = 0; r < slots; r++) {
    const guard = !shared && (r + 1) * NT > total;
    decl.push(`var ${p}r${r}: ${ty};`);
    if (shared) {
      setup.push(`let ${p}gr${r} = ${p}gr + ${r * rs}u;`, `let ${p}gc${r} = ${p}gc;`);
    } else {
      setup.push(`let ${p}e${r} = lid + ${r * NT}u;`);
      setup.push(`let ${p}gr${r} = ${p}e${r} / ${cv}u;`);
      setup.push(`let ${p}gc${r} = (${p}e${r} % ${cv}u) * ${V}u;`);
    }
    // mn: the M/N coordinate inside the tile; kk: the K coordinate inside the tile
    const mn = L.kContig ? `${p}gr${r}` : `${p}gc${r}`;
    const kk = L.kContig ? `${p}gc${r}` : `${p}gr${r}`;
    setup.push(`let ${p}kk${r} = ${kk};`);
    setup.push(
      `let ${p}ok${r} = ${
        guard ? `${p}e${r} < ${total}u && ` : ""
      }${L.origin} + ${mn} < ${L.bound};`,
    );
    // element offset (without the K origin) in units of the vector width
    if (shared && r > 0) {
      setup.push(`let ${p}o${r} = ${p}o0 + ${r * rs}u * ${p}ldv;`);
    } else {
      const elem = L.kContig
        ? `(${L.origin} + ${mn}) * ${L.ld} + ${kk}`
        : `${kk} * ${L.ld} + ${L.origin} + ${mn}`;
      setup.push(`let ${p}o${r} = base${L.src} + (${elem}) / ${V}u;`);
    }
    // K origin of the tile in vector units: k0 along K, k0·ld otherwise
    const kofs = L.kContig ? `k0 / ${V}u` : `k0 * ${p}ldv`;
    load.push(
      `if (${p}ok${r} && k0 + ${p}kk${r} < kEnd) { ${p}r${r} = ${L.src}[${p}o${r} + ${kofs}]; } ` +
        `else { ${p}r${r} = ${ty}(0.0); }`,
    );
    // where the slot lands in workgroup memory: [k][mn / 4][mn % 4]
    if (shared && (!L.kContig || rs % 4 === 0)) {
      const add = L.kContig ? ` + ${r * rs / 4}u` : "";
      setup.push(`let ${p}m4${r} = ${p}pm4${add};`, `let ${p}mc${r} = ${p}pmc;`);
    } else {
      setup.push(`let ${p}m4${r} = ${mn} / 4u;`, `let ${p}mc${r} = ${mn} % 4u;`);
    }
    const st: string[] = [];
    if (L.kContig) {
      // transposed: K runs along the vector; scalar stores into [k][mn/4][mn%4]
      if (V === 4) {
        for (let i = 0; i < 4; i++) {
          st.push(`${L.sm}$[${p}kk${r} + ${i}u][${p}m4${r}][${p}mc${r}] = ${p}r${r}[${i}];`);
        }
      } else st.push(`${L.sm}$[${p}kk${r}][${p}m4${r}][${p}mc${r}] = ${p}r${r};`);
    } else if (V === 4) {
      st.push(`${L.sm}$[${p}kk${r}][${p}m4${r}] = ${p}r${r};`);
    } else {
      st.push(`${L.sm}$[${p}kk${r}][${p}m4${r}][${p}mc${r}] = ${p}r${r};`);
    }
    store.push(guard ? `if (${p}e${r} < ${total}u) { ${st.join(" ")} }` : st.join(" "));
  }
  return { decl, setup, load, store };
}

/** Generates the WGSL body (everything after the engine's header) of one GEMM kernel. */
export function genGemm(c: MatmulConfig, v: MatmulVariant): string {
  validateConfig(c, undefined, v);
  const { bm, bn, bk, tm, tn } = c;
  const TX = bn / tn, TY = bm / tm, NT = TX * TY;
  const el = v.f16 ? "f16" : "f32";
  const flush = v.f16 ? (c.flush ?? F16_FLUSH) : 0;
  // f16: flush inside the unrolled tile every `flush` k, or after every flush/bk tiles
  const flushIn = flush > 0 && flush <= bk;
  const flushTiles = flush > bk ? flush / bk : 0;
  const SA4 = bm / 4 + (v.transA ? 0 : 1);
  const SB4 = bn / 4 + (v.transB ? 1 : 0);
  const A = loaderCode({
    src: "A",
    sm: "As",
    rows: v.transA ? bk : bm,
    cols: v.transA ? bm : bk,
    kContig: !v.transA,
    vec: v.vecA,
    el,
    bound: "P.M",
    origin: "tileM",
    ld: "P.lda",
  }, NT);
  const B = loaderCode({
    src: "B",
    sm: "Bs",
    rows: v.transB ? bn : bk,
    cols: v.transB ? bk : bn,
    kContig: v.transB,
    vec: v.vecB,
    el,
    bound: "P.N",
    origin: "tileN",
    ld: "P.ldb",
  }, NT);
  const ind = (lines: string[], n: number) => lines.map((l) => " ".repeat(n) + l).join("\n");
  const loads = (k0: string, n: number) =>
    ind([`let k0 = ${k0};`, ...A.load, ...B.load], n).replace(/^\s+/, "");
  const stores = (buf: number, n: number) =>
    ind([...A.store, ...B.store].map((s) => s.replaceAll("$", `${buf}`)), n);

  // f16: add the f16 partial sums into the f32 accumulators and restart them
  const h2 = !!(v.f16 && c.h2);
  const flushCode = (() => {
    const out: string[] = [];
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn / 4; j++) {
        out.push(
          h2
            ? `c${i}_${j} += vec4<f32>(vec2<f32>(h${i}_${j}l), vec2<f32>(h${i}_${j}h)); ` +
              `h${i}_${j}l = vec2<f16>(0.0); h${i}_${j}h = vec2<f16>(0.0);`
            : `c${i}_${j} += vec4<f32>(h${i}_${j}); h${i}_${j} = vec4<f16>(0.0);`,
        );
      }
    }
    return out.join(" ");
  })();
  // the inner product over one tile, fully unrolled; `tile`: WGSL of the tile's index
  const compute = (buf: number, n: number, tile: string) => {
    const out: string[] = [];
    const acc = v.f16 ? "h" : "c";
    for (let k = 0; k < bk; k++) {
      for (let i = 0; i < tm / 4; i++) out.push(`let a${i} = As${buf}[${k}][ia${i}];`);
      for (let j = 0; j < tn / 4; j++) out.push(`let b${j} = Bs${buf}[${k}][ib${j}];`);
      for (let i = 0; i < tm; i++) {
        const a = `a${i >> 2}.${"xyzw"[i & 3]}`;
        if (h2) {
          // one packed multiply-add per pair of outputs
          const f = [`let s${i} = vec2<f16>(${a});`];
          for (let j = 0; j < tn / 4; j++) {
            f.push(`h${i}_${j}l = fma(s${i}, b${j}.xy, h${i}_${j}l);`);
            f.push(`h${i}_${j}h = fma(s${i}, b${j}.zw, h${i}_${j}h);`);
          }
          out.push(f.join(" "));
          continue;
        }
        for (let j = 0; j < tn / 4; j++) {
          out.push(`${acc}${i}_${j} = fma(vec4<${el}>(${a}), b${j}, ${acc}${i}_${j});`);
        }
      }
      // scope each k so the fragment names can repeat
      const lines = tm / 4 + tn / 4 + (h2 ? tm : tm * tn / 4);
      out[out.length - lines] = "{ " + out[out.length - lines];
      out[out.length - 1] += " }";
      if (flushIn && (k + 1) % flush === 0) out.push(flushCode);
    }
    if (flushTiles) out.push(`if ((${tile} + 1u) % ${flushTiles}u == 0u) { ${flushCode} }`);
    return ind(out, n);
  };

  const accs: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn / 4; j++) accs.push(`var c${i}_${j} = vec4<f32>(0.0);`);
    for (let j = 0; v.f16 && j < tn / 4; j++) {
      accs.push(
        h2
          ? `var h${i}_${j}l = vec2<f16>(0.0); var h${i}_${j}h = vec2<f16>(0.0);`
          : `var h${i}_${j} = vec4<f16>(0.0);`,
      );
    }
  }
  const frag: string[] = [];
  for (let i = 0; i < tm / 4; i++) frag.push(`let ia${i} = ty + ${i * TY}u;`);
  for (let j = 0; j < tn / 4; j++) frag.push(`let ib${j} = tx + ${j * TX}u;`);

  // epilogue: out = alpha·acc (+ beta·out) (+ bias)
  const epi: string[] = [];
  for (let i = 0; i < tm; i++) {
    const mLocal = `${4 * (i >> 2) * TY + (i & 3)}u + 4u * ty`;
    const body: string[] = [];
    for (let j = 0; j < tn / 4; j++) {
      const nn = `tileN + ${4 * j * TX}u + 4u * tx`;
      if (v.vecC === 4) {
        const terms = [`P.alpha * c${i}_${j}`];
        if (v.beta) terms.push(`P.beta * C[rc + n / 4u]`);
        if (v.bias) terms.push(`bias[n / 4u]`);
        body.push(`{ let n = ${nn}; if (n < P.N) { C[rc + n / 4u] = ${terms.join(" + ")}; } }`);
      } else {
        for (let q = 0; q < 4; q++) {
          const terms = [`P.alpha * c${i}_${j}.${"xyzw"[q]}`];
          if (v.beta) terms.push(`P.beta * C[rc + n]`);
          if (v.bias) terms.push(`bias[n]`);
          body.push(
            `{ let n = ${nn} + ${q}u; if (n < P.N) { C[rc + n] = ${terms.join(" + ")}; } }`,
          );
        }
      }
    }
    epi.push(
      `{ let m = tileM + ${mLocal}; if (m < P.M) {\n` +
        `    let rc = baseC + m * P.ldc / ${v.vecC}u;\n    ${body.join("\n    ")}\n  } }`,
    );
  }

  const thread = c.warp
    ? [
      `let lane = lid % 32u;`,
      `let warp = lid / 32u;`,
      `let tx = (warp % ${TX / 8}u) * 8u + lane % 8u;`,
      `let ty = (warp / ${TX / 8}u) * 4u + lane / 8u;`,
    ]
    : [`let tx = lid % ${TX}u;`, `let ty = lid / ${TX}u;`];

  const smem: string[] = [];
  for (let s = 0; s < c.stages; s++) {
    smem.push(`var<workgroup> As${s}: array<array<vec4<${el}>, ${SA4}>, ${bk}>;`);
    smem.push(`var<workgroup> Bs${s}: array<array<vec4<${el}>, ${SB4}>, ${bk}>;`);
  }

  const kBase = "kBeg";
  let loop: string;
  if (c.stages === 2) {
    loop = `
  if (nT > 0u) {
    ${loads(`${kBase}`, 4)}
${stores(0, 4)}
  }
  workgroupBarrier();
  var kt = 0u;
  loop {
    if (kt >= nT) { break; }
    let more1 = kt + 1u < nT;
    if (more1) {
      ${loads(`${kBase} + (kt + 1u) * ${bk}u`, 6)}
    }
${compute(0, 4, "kt")}
    if (more1) {
${stores(1, 6)}
    }
    workgroupBarrier();
    if (!more1) { break; }
    let more2 = kt + 2u < nT;
    if (more2) {
      ${loads(`${kBase} + (kt + 2u) * ${bk}u`, 6)}
    }
${compute(1, 4, "(kt + 1u)")}
    if (more2) {
${stores(0, 6)}
    }
    workgroupBarrier();
    kt += 2u;
  }`;
  } else {
    loop = `
  if (nT > 0u) {
    ${loads(`${kBase}`, 4)}
  }
  var kt = 0u;
  loop {
    if (kt >= nT) { break; }
${stores(0, 4)}
    workgroupBarrier();
    if (kt + 1u < nT) {
      ${loads(`${kBase} + (kt + 1u) * ${bk}u`, 6)}
    }
${compute(0, 4, "kt")}
    workgroupBarrier();
    kt += 1u;
  }`;
  }

  return `
${smem.join("\n")}

@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${thread.join("\n  ")}
  let tileN = wid.x * ${bn}u;
  let tileM = wid.y * ${bm}u;
  let z = wid.z;
  let bz = z / P.nSplit;
  let split = z % P.nSplit;
  let kBeg = split * P.kSplit;
  let kEnd = min(P.K, kBeg + P.kSplit);
  let nT = select(0u, (kEnd - kBeg + ${bk - 1}u) / ${bk}u, kEnd > kBeg);
  let baseA = P.offA + bz * P.sA;
  let baseB = P.offB + bz * P.sB;
  let baseC = P.offC + z * P.sC;
  ${A.decl.join(" ")}
  ${B.decl.join(" ")}
  ${A.setup.join("\n  ")}
  ${B.setup.join("\n  ")}
  ${frag.join("\n  ")}
  ${accs.join("\n  ")}
${loop}
  ${v.f16 ? flushCode : ""}
  ${epi.join("\n  ")}
}
`;
}

/**
 * The split-K reduction: out = alpha·Σ_s ws[s] + beta·out + bias over an
 * [M, N] output, the slices summed in order s = 0, 1, … (deterministic).
 */
export function genSplitReduce(vec: 1 | 4, beta: boolean, bias: boolean, wg: number): string {
  const ty = vec === 4 ? "vec4<f32>" : "f32";
  const terms = ["P.alpha * s"];
  if (beta) terms.push("P.beta * C[P.offC + i]");
  if (bias) terms.push(`bias[i % P.nv]`);
  return `
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * ${wg}u + lid;
  if (i >= P.total) { return; }
  var s = ${ty}(0.0);
  for (var k = 0u; k < P.nSplit; k++) { s += ws[k * P.total + i]; }
  C[P.offC + i] = ${terms.join(" + ")};
}
`;
}
