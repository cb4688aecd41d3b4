/**
 * Lab: does storing A's f16 values pre-splatted in workgroup memory ((a, a) pairs, one u32 each)
 * speed up the packed-f16 GEMM? The inner loop then reads four splatted pairs with one vec4<u32>
 * load and bitcasts them, instead of building `vec2<f16>(a.x)` per row (an instruction per row
 * per k beside the two packed multiply-adds, unless the driver folds it into the operand). No
 * product code changes: the probe rewrites the GEMM kernels' WGSL as the pipeline is created.
 *
 *   deno run -A dev/f16_splat_probe.ts            # the kernels as they are
 *   SPLAT=1 deno run -A dev/f16_splat_probe.ts    # A pre-splatted
 * Each run checks outputs against float64 (bench/matmul.ts timeGemm) before timing.
 */
import { initEngine } from "../tensor/engine.ts";
import { timeGemm } from "../bench/matmul.ts";
import type { MatmulConfig } from "../kernels/matmul/mod.ts";

const splat = Deno.env.get("SPLAT") === "1";

/**
 * The rewrite: As* holds each A value twice, (a, a, a', a') per vec4<f16>; the stores write both
 * halves, the inner loop loads two vec4 where it loaded one and takes `.xy` / `.zw` (the halves
 * of one 32-bit register) as the packed multiplier.
 */
function presplat(code: string): string {
  let out = code.replace(
    /var<workgroup> (As\d): array<array<vec4<f16>, (\d+)>, (\d+)>;/g,
    (_m, n, w, k) => `var<workgroup> ${n}: array<array<vec4<f16>, ${2 * Number(w)}>, ${k}>;`,
  );
  // scalar stores As[k][m4][mc] = v
  out = out.replace(
    /(As\d)\[([^\]]+)\]\[([^\]]+)\]\[([^\]]+)\] = ([^;]+);/g,
    (_m, a, k, m4, mc, v) => {
      const at = `${a}[${k}][2u * (${m4}) + (${mc}) / 2u][((${mc}) % 2u) * 2u`;
      return `${at}] = ${v}; ${at} + 1u] = ${v};`;
    },
  );
  // vector stores As[k][m4] = r (vec4<f16>)
  out = out.replace(
    /(As\d)\[([^\]]+)\]\[([^\]]+)\] = ([A-Za-z_]\w*);/g,
    (_m, a, k, m4, r) =>
      `${a}[${k}][2u * (${m4})] = ${r}.xxyy; ${a}[${k}][2u * (${m4}) + 1u] = ${r}.zzww;`,
  );
  out = out.replace(
    /let (a\d+) = (As\d)\[(\d+)\]\[(ia\d+)\];/g,
    "let $1 = $2[$3][2u * $4]; let $1b = $2[$3][2u * $4 + 1u];",
  );
  const half: Record<string, string> = { x: ".xy", y: ".zw", z: "b.xy", w: "b.zw" };
  out = out.replace(
    /let s(\d+) = vec2<f16>\((a\d+)\.([xyzw])\);/g,
    (_m, i, a, c) => `let s${i} = ${a}${half[c]};`,
  );
  return out;
}

const P = (globalThis as unknown as { GPUDevice: { prototype: GPUDevice } }).GPUDevice.prototype;
const create = P.createShaderModule;
P.createShaderModule = function (this: GPUDevice, d) {
  if (splat && d.label?.startsWith("gemm_") && d.code.includes("vec2<f16>")) {
    d = { ...d, code: presplat(d.code) };
  }
  return create.call(this, d);
};

const e = await initEngine();
// (the pre-splatted A doubles A's workgroup memory: 128×128×32 with 2 stages no longer fits 48 KiB)
const cfgs: MatmulConfig[] = [
  { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4, stages: 2, warp: true, splitK: 1, flush: 32, h2: true },
  { bm: 128, bn: 128, bk: 32, tm: 4, tn: 8, stages: 1, warp: true, splitK: 1, flush: 32, h2: true },
];
const quick = e.info.isFallback;
const n = quick ? 256 : 4096;
for (const [transA, transB] of [[false, true], [false, false], [true, false]]) {
  for (const config of cfgs) {
    const s = { m: n, n, k: n, transA, transB, batch: 1, f16: true };
    let r;
    try {
      r = await timeGemm(e, s, { config, repeats: quick ? 1 : undefined });
    } catch (err) {
      console.log(`skipped: ${(err as Error).message.slice(0, 300)}`);
      continue;
    }
    console.log(
      `${splat ? "presplat" : "as is   "} ${transA ? "T" : "N"}${transB ? "T" : "N"} ${n}³ ` +
        `${r.config.padEnd(28)} ${r.tflops.toFixed(1)} TFLOP/s`,
    );
  }
}
