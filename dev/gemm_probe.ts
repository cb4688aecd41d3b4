/**
 * Lab: where does the tiled GEMM's time go, and do subgroup shuffles help? No product code
 * changes: the probe rewrites the GEMM kernels' WGSL as their pipelines are created, then times
 * 4096³ products of the tuned tiles (fp32 and f16 inputs, NT and NN).
 *
 *   MODE=asis  deno run -A dev/gemm_probe.ts   # the kernels as they are
 *   MODE=inner deno run -A dev/gemm_probe.ts   # the K loop without its global loads and
 *       workgroup stores (a branch that is never taken at run time; barriers and the inner
 *       product over the tile stay): the rate of the inner loop alone. Outputs not checked.
 *   MODE=noload / MODE=nostore   # the K loop without its global loads (zeros are stored
 *       instead) / without its workgroup stores (loads kept): which half of the tile loading
 *       costs what. Outputs not checked.
 *   MODE=swz4 / swz8 / swz16   # the workgroups walk the output in groups of 4 / 8 / 16 tile
 *       rows (column by column inside a group) instead of row by row, so the tiles of A and B
 *       that neighbouring workgroups read are more often still in L2. Checked.
 *   MODE=shufA deno run -A dev/gemm_probe.ts   # A's fragments through subgroupShuffle: the 8
 *       lanes of a warp that share A rows each read a different k of them from workgroup
 *       memory once per 8 k, then take each k's values from the lane that read it. Checked
 *       against float64 (bench/matmul.ts timeGemm).
 * stages-2 tiles with the warp layout only (the rewrite relies on both).
 */
import { initEngine } from "../tensor/engine.ts";
import { timeGemm } from "../bench/matmul.ts";
import type { MatmulConfig } from "../kernels/matmul/mod.ts";

const mode = Deno.env.get("MODE") ?? "asis";

function inner(code: string): string {
  // the K loop's loads and stores sit in `if (more1) {` / `if (more2) {` blocks
  return code.replaceAll(/if \((more[12])\) \{/g, "if (P.alpha > 3.0e38) {");
}

function noload(code: string): string {
  return code.replaceAll(/if \(([ab])ok(\d+) && k0/g, "if (P.alpha > 3.0e38 && $1ok$2 && k0");
}

function nostore(code: string): string {
  return code.replaceAll(/((?:As|Bs)\d\[[^;=]+\] = [^;]+;)/g, "if (P.alpha > 3.0e38) { $1 }");
}

function swizzle(code: string, g: number): string {
  return code.replace(
    "fn main(@builtin(workgroup_id) wid: vec3<u32>,",
    "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,",
  ).replace(
    /let tileN = wid\.x \* (\d+)u;\s*let tileM = wid\.y \* (\d+)u;/,
    (_m, bn, bm) =>
      `let pid = wid.y * nwg.x + wid.x; let inG = ${g}u * nwg.x; let firstM = (pid / inG) * ${g}u; ` +
      `let gm = min(nwg.y - firstM, ${g}u); let tileM = (firstM + (pid % inG) % gm) * ${bm}u; ` +
      `let tileN = ((pid % inG) / gm) * ${bn}u;`,
  );
}

function shufA(code: string): string {
  const el = code.includes("var<workgroup> As0: array<array<vec4<f16>") ? "f16" : "f32";
  const frags = [...code.matchAll(/let ia(\d+) = /g)].map((m) => m[1]);
  const decl = [`let lane8 = lid % 8u;`, `let lbase = (lid % 32u) - lane8;`];
  for (const i of frags) decl.push(`var sa${i}: vec4<${el}>;`);
  let out = code.replace(/(let ib0 = [^;]+;)/, `$1\n  ${decl.join(" ")}`);
  out = out.replace(
    /let a(\d+) = (As\d)\[(\d+)\]\[(ia\d+)\];/g,
    (_m, i, as, k, ia) => {
      const j = Number(k) % 8;
      const load = j === 0 ? `sa${i} = ${as}[${k}u + lane8][${ia}]; ` : "";
      return `${load}let a${i} = subgroupShuffle(sa${i}, lbase + ${j}u);`;
    },
  );
  return out;
}

const GA = globalThis as unknown as {
  GPUDevice: { prototype: GPUDevice };
  GPUAdapter: { prototype: GPUAdapter };
};
const P = GA.GPUDevice.prototype;
const create = P.createShaderModule;
P.createShaderModule = function (this: GPUDevice, d) {
  if (d.label?.startsWith("gemm_") && !d.label.startsWith("gemm_splitk")) {
    if (mode === "inner") d = { ...d, code: inner(d.code) };
    if (mode === "shufA") d = { ...d, code: shufA(d.code) };
    if (mode.startsWith("swz")) d = { ...d, code: swizzle(d.code, Number(mode.slice(3))) };
    if (mode === "noload") d = { ...d, code: noload(d.code) };
    if (mode === "nostore") d = { ...d, code: nostore(d.code) };
  }
  return create.call(this, d);
};
// subgroups: granted when requested although adapter.features does not list it
const A = GA.GPUAdapter.prototype;
const request = A.requestDevice;
A.requestDevice = function (this: GPUAdapter, d) {
  const f = [...(d?.requiredFeatures ?? [])];
  if (mode === "shufA") f.push("subgroups" as GPUFeatureName);
  return request.call(this, { ...d, requiredFeatures: f });
};

const e = await initEngine();
const cfg = (bm: number, bn: number, bk: number, tm: number, tn: number, f16: boolean) =>
  ({
    bm,
    bn,
    bk,
    tm,
    tn,
    stages: 2,
    warp: true,
    splitK: 1,
    ...(f16 ? { flush: 32, h2: true } : {}),
  }) as MatmulConfig;
const runs: [boolean, MatmulConfig][] = [
  [false, cfg(64, 128, 8, 8, 8, false)],
  [false, cfg(128, 128, 16, 8, 8, false)],
  [true, cfg(64, 64, 32, 4, 4, true)],
  [true, cfg(128, 128, 32, 4, 8, true)],
];
const quick = e.info.isFallback;
const n = quick ? 256 : 4096;
for (const [transA, transB] of [[false, true], [false, false]]) {
  for (const [f16, config] of runs) {
    const s = { m: n, n, k: n, transA, transB, batch: 1, f16 };
    let r;
    try {
      r = await timeGemm(e, s, {
        config,
        repeats: quick ? 1 : undefined,
        checks: ["inner", "noload", "nostore"].includes(mode) ? 0 : undefined,
      });
    } catch (err) {
      console.log(`${mode} failed: ${(err as Error).message.slice(0, 300)}`);
      continue;
    }
    console.log(
      `${mode.padEnd(7)} ${f16 ? "f16" : "f32"} ${transA ? "T" : "N"}${transB ? "T" : "N"} ${n}³ ` +
        `${r.config.padEnd(28)} ${r.tflops.toFixed(1)} TFLOP/s`,
    );
  }
}
