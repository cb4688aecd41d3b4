/**
 * Token cross-entropy over logits [T, V] and i32 labels [T] (flash-attention
 * `flash_attn/losses/cross_entropy.py`): loss_t = logsumexp(z_t) − z_t[y_t], mean over the rows
 * whose label is not −100 (ignored, as PyTorch / flash-attn); gradient g·(softmax(z_t) −
 * onehot(y_t))/count. All statistics in f32.
 *
 * Row kernel: one workgroup per row. Each of the 256 threads keeps an online
 * (max, Σ exp(z − max)) over its strided slice of the row (vec4 when V % 4 ==
 * 0); the workgroup combines them with a fixed shared-memory tree, so the
 * result is bit-identical on every run. lse = max + log Σ. The same kernel,
 * in its in-place variant, then rewrites the row with gradScale·(softmax −
 * onehot) (crossEntropyRows, for a fused LM head that never keeps the
 * logits). The mean is a second single-workgroup kernel (fixed order), which
 * also counts the rows that are not ignored; the backward of `crossEntropy`
 * recomputes softmax from the saved row lse and reads g and the count from
 * the GPU, so nothing waits on the host.
 *
 * A label outside [0, V) that is not −100 gives a NaN row loss (and NaN
 * gradient row) instead of reading out of bounds, so the error shows up in
 * the loss.
 */
import { defineKernel, type Kernel } from "../tensor/engine.ts";
import { shapeStr, type Tensor } from "../tensor/tensor.ts";
import { record } from "../tensor/tape.ts";
import { mergeMaxSumWgsl, WG } from "./wgsl.ts";

/** Labels with this value contribute neither loss nor gradient. */
export const IGNORE_INDEX = -100;

/** Lowest f32 (WGSL constant expressions may not be infinite). */
const LOWEST = "-3.4028234e38";

const cache = new Map<string, Kernel>();
function getKernel(key: string, make: () => Kernel): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = make());
  return k;
}

const vty = (v: number) => (v === 4 ? "vec4<f32>" : "f32");

/** `row`, `base` and the label checks shared by the row kernels. */
const ROW_HEAD = /* wgsl */ `
  let row = wid.y * nwg.x + wid.x;
  if (row >= P.rows) { return; }
  let base = row * P.n;
  let lab = labels[row];
  let ignored = lab == ${IGNORE_INDEX};
  let valid = lab >= 0 && u32(lab) < P.V;
  let ul = select(0u, u32(lab), valid);
  let nan = bitcast<f32>(0x7fc00000u);`;

/** z value at the label (ul), for a scalar or vec4 row. */
const zAt = (v: number) => (v === 4 ? "z[base + ul / 4u][ul % 4u]" : "z[base + ul]");

/**
 * softmax − onehot for the element(s) `p` at vec index j (p = exp(z − lse)),
 * in place on `p` (a var).
 */
const minusOnehot = (v: number) =>
  v === 4
    ? "if (valid && ul / 4u == j) { p[ul % 4u] -= 1.0; }"
    : "if (valid && ul == j) { p -= 1.0; }";

/**
 * Row kernel: loss[row] (and lse[row]); with `grad`, z is rewritten in place
 * with P.scale·(softmax − onehot) (zeros for ignored rows).
 */
function rowKernel(v: number, grad: boolean, saveLse: boolean): Kernel {
  const T = vty(v);
  return getKernel(`rows_${v}_${grad}_${saveLse}`, () => {
    const update = v === 4
      ? `let vm = max(max(x.x, x.y), max(x.z, x.w));
      if (vm > m) { s = s * exp(m - vm); m = vm; }
      let ev = exp(x - vec4<f32>(m));
      s = s + (ev.x + ev.y) + (ev.z + ev.w);`
      : `if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }`;
    const bindings: Record<string, { access: "read" | "rw"; type: string }> = {
      z: { access: grad ? "rw" : "read", type: `array<${T}>` },
      labels: { access: "read", type: "array<i32>" },
      loss: { access: "rw", type: "array<f32>" },
    };
    if (saveLse) bindings.lse = { access: "rw", type: "array<f32>" };
    const gradPass = grad
      ? `
  let sc = select(select(nan, P.scale, valid), 0.0, ignored);
  let shift = ${v === 4 ? "vec4<f32>(row_lse)" : "row_lse"};
  for (var j = lid; j < P.n; j += ${WG}u) {
    var p = exp(z[base + j] - shift);
    ${minusOnehot(v)}
    z[base + j] = sc * p;
  }`
      : "";
    return defineKernel({
      name: `cross_entropy_rows_v${v}${grad ? "_grad" : ""}`,
      params: { rows: "u32", n: "u32", V: "u32", scale: "f32" },
      bindings,
      code: /* wgsl */ `
var<workgroup> red_m: array<f32, ${WG}>;
var<workgroup> red_s: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {${ROW_HEAD}
  var m = ${LOWEST};
  var s = 0.0;
  for (var j = lid; j < P.n; j += ${WG}u) {
    let x = z[base + j];
    ${update}
  }
  ${mergeMaxSumWgsl(WG, "lid")}
  let row_lse = red_m[0] + log(red_s[0]);
  if (lid == 0u) {
    var l = 0.0;
    if (!ignored) { l = select(nan, row_lse - ${zAt(v)}, valid); }
    loss[row] = l;${saveLse ? "\n    lse[row] = row_lse;" : ""}
  }${
        grad
          ? `
  // every thread has read its slice and lane 0 its label value before the row is overwritten
  workgroupBarrier();${gradPass}`
          : ""
      }
}`,
    });
  });
}

/** out[0] = Σ loss / count, cnt[0] = count of rows whose label is not ignored (fixed order). */
function meanKernel(): Kernel {
  return getKernel("mean", () =>
    defineKernel({
      name: "cross_entropy_mean",
      params: { rows: "u32" },
      bindings: {
        loss: "read",
        labels: { access: "read", type: "array<i32>" },
        out: "rw",
        cnt: "rw",
      },
      code: /* wgsl */ `
var<workgroup> red_s: array<f32, ${WG}>;
var<workgroup> red_c: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  var c = 0u;
  for (var j = lid; j < P.rows; j += ${WG}u) {
    s += loss[j];
    c += select(1u, 0u, labels[j] == ${IGNORE_INDEX});
  }
  red_s[lid] = s;
  red_c[lid] = c;
  workgroupBarrier();
  for (var off = ${WG >> 1}u; off > 0u; off = off >> 1u) {
    if (lid < off) {
      s = s + red_s[lid + off];
      c = c + red_c[lid + off];
      red_s[lid] = s;
      red_c[lid] = c;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    out[0] = s / f32(c);
    cnt[0] = f32(c);
  }
}`,
    }));
}

/** gz = g[0]/cnt[0]·(exp(z − lse) − onehot), zeros for ignored rows. */
function backwardKernel(v: number): Kernel {
  const T = vty(v);
  return getKernel(`bwd_${v}`, () =>
    defineKernel({
      name: `cross_entropy_bwd_v${v}`,
      params: { rows: "u32", n: "u32", V: "u32" },
      bindings: {
        z: { access: "read", type: `array<${T}>` },
        labels: { access: "read", type: "array<i32>" },
        lse: "read",
        g: "read",
        cnt: "read",
        gz: { access: "rw", type: `array<${T}>` },
      },
      code: /* wgsl */ `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {${ROW_HEAD}
  let sc = select(select(nan, g[0] / cnt[0], valid), 0.0, ignored);
  let shift = ${v === 4 ? "vec4<f32>(lse[row])" : "lse[row]"};
  for (var j = lid; j < P.n; j += ${WG}u) {
    var p = exp(z[base + j] - shift);
    ${minusOnehot(v)}
    gz[base + j] = sc * p;
  }
}`,
    }));
}

function checkArgs(op: string, logits: Tensor, labels: Tensor): [number, number] {
  if (logits.rank !== 2 || logits.dtype !== "f32") {
    throw new Error(`${op}: logits ${logits} are not an f32 [T, V] matrix`);
  }
  const [T, V] = logits.shape;
  if (labels.dtype !== "i32" || labels.size !== T) {
    throw new Error(`${op}: labels ${labels} do not match logits ${shapeStr(logits.shape)}`);
  }
  if (V === 0) throw new Error(`${op}: empty vocabulary`);
  return [T, V];
}

/** One workgroup per row as a grid (rows over 65535 wrap into y). */
function rowGrid(rows: number): [number, number, number] {
  return rows <= 65535 ? [rows, 1, 1] : [65535, Math.ceil(rows / 65535), 1];
}

/**
 * Mean token cross-entropy of logits [T, V] against i32 labels [T] (label
 * −100 ignored: excluded from the sum and the count). Returns [1];
 * differentiable in the logits. If every label is ignored the loss is NaN
 * (0/0, as PyTorch) and the gradient is zero.
 */
export function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  const [T, V] = checkArgs("crossEntropy", logits, labels);
  const e = logits.engine;
  const v = V % 4 === 0 ? 4 : 1;
  const rowLoss = e.empty([T]);
  const lse = e.empty([T]);
  const loss = e.empty([1]);
  const cnt = e.empty([1]);
  e.run(
    rowKernel(v, false, true),
    { z: logits, labels, loss: rowLoss, lse },
    { rows: T, n: V / v, V, scale: 0 },
    rowGrid(T),
  );
  e.run(meanKernel(), { loss: rowLoss, labels, out: loss, cnt }, { rows: T }, [1, 1, 1]);
  rowLoss.dispose();
  record(
    "cross_entropy",
    [logits],
    [loss],
    [logits, labels, lse, cnt],
    ([g], [zs, ls, lses, cs]) => {
      if (!g) return [null];
      const gz = e.empty([T, V]);
      e.run(
        backwardKernel(v),
        { z: zs, labels: ls, lse: lses, g, cnt: cs, gz },
        { rows: T, n: V / v, V },
        rowGrid(T),
      );
      return [gz];
    },
  );
  lse.dispose();
  cnt.dispose();
  return loss;
}

/**
 * Raw (not recorded) per-row cross-entropy for a memory-saving fused LM head:
 * rowLoss[t] = logsumexp(z_t) − z_t[y_t] (0 where the label is −100). When
 * `opts.gradScale` is given, `logits` is overwritten in place with
 * gradScale·(softmax(z_t) − onehot(y_t)) (zero rows for ignored labels).
 * Deterministic.
 */
export function crossEntropyRows(
  logits: Tensor,
  labels: Tensor,
  rowLoss: Tensor,
  opts: { gradScale?: number } = {},
): void {
  const [T, V] = checkArgs("crossEntropyRows", logits, labels);
  if (rowLoss.dtype !== "f32" || rowLoss.size !== T) {
    throw new Error(`crossEntropyRows: rowLoss ${rowLoss} is not f32 [${T}]`);
  }
  const v = V % 4 === 0 ? 4 : 1;
  const grad = opts.gradScale !== undefined;
  logits.engine.run(
    rowKernel(v, grad, false),
    { z: logits, labels, loss: rowLoss },
    { rows: T, n: V / v, V, scale: opts.gradScale ?? 0 },
    rowGrid(T),
  );
}
