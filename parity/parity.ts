/**
 * `based parity DIR`: runs every case a fixture folder describes (a
 * manifest.json plus safetensors files in the format of the reference
 * fixtures) and compares with the manifest's tolerances: linear attention
 * kernels in each training view, sliding-window attention with rotary,
 * BaseConv, the three mixers as modules, the full model (logits, loss, every
 * activation and parameter gradient) in each view, and AdamW steps. Shapes
 * and hyper-parameters come from the manifest, never from constants here.
 */
import type { Engine } from "../tensor/engine.ts";
import { clearTape, noGrad } from "../tensor/tape.ts";
import { tidy } from "../tensor/tensor.ts";
import { EMBEDDING } from "../model/based.ts";
import { baseConv, linearAttentionMixer, slidingMixer } from "../model/mixers.ts";
import type { LinearAttentionView } from "../kernels/linear_attention/mod.ts";
import { causalConv1d } from "../kernels/conv1d.ts";
import { linear } from "../kernels/matmul/mod.ts";
import { split } from "../kernels/layout.ts";
import {
  adamwCase,
  featureMapCase,
  linearAttentionCase,
  mixerCfg,
  modelCase,
  moduleCase,
  slidingCoreCase,
} from "./cases.ts";
import { type CaseResult, Fixtures } from "./fixtures.ts";

export { type CaseResult, compareTensor, swap12 } from "./fixtures.ts";

export const VIEWS: LinearAttentionView[] = ["quadratic", "chunked", "cumsum"];

// ----------------------------------------------------------------- runner

export interface ParityOptions {
  views?: LinearAttentionView[];
  log?: (line: string) => void;
  /** only cases whose name contains this string */
  filter?: string;
}

export function formatCase(r: CaseResult): string {
  const tag = r.status === "pass" ? "ok  " : r.status === "fail" ? "FAIL" : "skip";
  if (r.status === "skip") return `${tag} ${r.name}${r.note ? `: ${r.note}` : ""}`;
  return `${tag} ${r.name}: ${r.tensors} tensors, max rel err ${r.maxRelErr.toExponential(2)}, ` +
    `rel L2 ${r.relL2.toExponential(2)}, worst ${r.worst} at ${
      (r.worstRatio * 100).toFixed(0)
    }% of tolerance` +
    (r.note ? ` — ${r.note}` : "");
}

export async function runParity(
  e: Engine,
  dir: string,
  opts: ParityOptions = {},
): Promise<CaseResult[]> {
  const fx = await Fixtures.open(dir);
  const log = opts.log ?? ((s: string) => console.log(s));
  const views = opts.views ?? VIEWS;
  const covered = new Set<string>();
  const results: CaseResult[] = [];
  const t = fx.manifest.tensors;
  const want = (name: string) => !opts.filter || name.includes(opts.filter);
  const add = async (name: string, f: () => Promise<CaseResult>) => {
    if (!want(name)) return;
    let r: CaseResult;
    try {
      r = await f();
    } catch (err) {
      clearTape();
      r = {
        name,
        status: "fail",
        tensors: 0,
        maxRelErr: Infinity,
        relL2: Infinity,
        worst: "",
        worstRatio: Infinity,
        note: (err as Error).message.split("\n")[0],
      };
    }
    results.push(r);
    log(formatCase(r));
  };

  // linear attention kernel cases: every prefix with q, k, v, dy, y
  const laPrefixes = [
    ...new Set(
      Object.keys(t).filter((n) =>
        /\.y$/.test(n) && t[n.replace(/\.y$/, ".q")] && t[n.replace(/\.y$/, ".dy")]
      ).map((n) => n.replace(/\.y$/, "")),
    ),
  ];
  for (const p of laPrefixes) {
    for (const v of views) {
      await add(`linear attention ${p} [${v}]`, () => linearAttentionCase(e, fx, p, v, covered));
    }
    if (fx.has(`${p}.phi_q`)) {
      await add(`taylor feature map ${p}`, () => featureMapCase(e, fx, p, covered));
    }
  }
  if (fx.has("swa.qkv")) {
    await add("sliding window attention + rotary (core)", () => slidingCoreCase(e, fx, covered));
  }
  if (fx.has("conv.x")) {
    const info = fx.manifest.info.baseconv ?? {};
    const d = fx.shape("conv.x")[2];
    const inner = fx.shape("conv.in_proj.weight")[0] / 2;
    const m = mixerCfg("conv", {
      expandProj: Number(info.expand_proj ?? (2 * inner) / d),
      kernelSize: fx.shape("conv.conv.conv.weight")[2],
      useBias: fx.has("conv.in_proj.bias"),
    });
    await add(
      "BaseConv module",
      () =>
        moduleCase(
          e,
          fx,
          "conv",
          [
            "in_proj.weight",
            "in_proj.bias",
            "out_proj.weight",
            "out_proj.bias",
            "conv.conv.weight",
          ],
          (w, x) => baseConv(m, w, x, d),
          async (run, w, x) => {
            // the pre-silu conv output, recomputed without recording
            const c = noGrad(() =>
              tidy(() => {
                const z = linear(x, w("in_proj.weight"), m.useBias ? w("in_proj.bias") : undefined);
                return causalConv1d(split(z, -1, [inner, inner])[0], w("conv.conv.weight"));
              })
            );
            run.check("conv.conv_out", await e.readF32(c));
            c.dispose();
          },
          "BaseConv module",
          covered,
        ),
    );
  }
  if (fx.has("la_module.x")) {
    const info = (fx.manifest.info.linear_attention?.la_module ?? {}) as Record<string, number>;
    const [B, L] = fx.shape("la_module.x");
    const F = info.F ?? 16;
    const H = info.H ?? fx.shape("la_module.proj_q.weight")[0] / F;
    for (const v of views) {
      const m = mixerCfg("linear", {
        featureDim: F,
        numHeads: H,
        headDim: fx.shape("la_module.proj_v.weight")[0] / H,
        view: v,
      });
      await add(
        `LinearAttention module [${v}]`,
        () =>
          moduleCase(
            e,
            fx,
            "la_module",
            ["proj_q.weight", "proj_k.weight", "proj_v.weight", "out_proj.weight"],
            (w, x) => linearAttentionMixer(m, w, x, B, L),
            async () => {},
            `LinearAttention module [${v}]`,
            covered,
          ),
      );
    }
  }
  if (fx.has("swa_module.x")) {
    const info = fx.manifest.info.sliding_window ?? {};
    const [B, L, d] = fx.shape("swa_module.x");
    const m = mixerCfg("slide", {
      numHeads: Number(info.H ?? 1),
      window: Number(info.window_size ?? 2 * L),
    });
    const ctx = {
      nEmbd: d,
      rotaryBase: Number(info.rotary_base ?? 10000),
      rotaryFraction: Number(info.rotary_dim ?? d / m.numHeads) / (d / m.numHeads),
    };
    await add(
      "SlidingAttention module",
      () =>
        moduleCase(
          e,
          fx,
          "swa_module",
          ["Wqkv.weight", "out_proj.weight"],
          (w, x) => slidingMixer(m, w, x, B, L, ctx),
          async () => {},
          "SlidingAttention module",
          covered,
        ),
    );
  }
  if (fx.has("input_ids") && fx.has(EMBEDDING)) {
    for (const v of views) {
      await add(
        `model [${v}] logits, loss, activations, gradients`,
        () => modelCase(e, fx, v, covered),
      );
    }
    if (fx.has("step1." + EMBEDDING) || fx.has("losses")) {
      await add("AdamW 3 steps", () => adamwCase(e, fx, false, covered));
      if (fx.has("clip.losses")) {
        await add("AdamW 3 steps with clip_grad_norm 1.0", () => adamwCase(e, fx, true, covered));
      }
    }
  }
  // expected tensors no case compared (reported, not failed)
  const unchecked = fx.expected().filter((n) => !covered.has(n));
  if (unchecked.length && !opts.filter) {
    const r: CaseResult = {
      name: "not compared",
      status: "skip",
      tensors: 0,
      maxRelErr: 0,
      relL2: 0,
      worst: "",
      worstRatio: 0,
      note: `${unchecked.length} expected tensors no case uses: ${
        unchecked.slice(0, 8).join(", ")
      }${unchecked.length > 8 ? ", …" : ""}`,
    };
    results.push(r);
    log(formatCase(r));
  }
  return results;
}
