/**
 * PyTorch figures measured on this machine, for `based bench --anchors FILE[,FILE...]`: the JSON of
 * dev/torch_matmul.py (`fp32` / `fp16`: TFLOP/s by matmul shape name) and of dev/torch_based.py
 * (`step`: the training step's tokens/s and peak GiB per PyTorch precision mode, with the
 * workload it ran). Several files are merged (later keys win).
 */
import { BasedError } from "../errors.ts";
import type { Precision } from "../train/amp.ts";

export interface TorchStepFigure {
  tokens_per_s: number;
  peak_gib: number;
}

export interface TorchAnchors {
  /** matmul TFLOP/s by shape name: fp32 with TF32 off, fp16 on tensor cores */
  fp32?: Record<string, number>;
  fp16?: Record<string, number>;
  /** the training step: the workload (as bench/mod.ts names it) and one figure per mode */
  step?: {
    workload: string;
    fp32?: TorchStepFigure;
    tf32?: TorchStepFigure;
    bf16?: TorchStepFigure;
  };
}

/** Reads and merges the comma-separated anchor files; a bad file is one error line. */
export async function readAnchors(spec: string): Promise<TorchAnchors> {
  const out: TorchAnchors = {};
  for (const file of spec.split(",").filter((f) => f)) {
    let obj: unknown;
    try {
      obj = JSON.parse(await Deno.readTextFile(file));
    } catch (e) {
      throw new BasedError(`--anchors ${file}: ${(e as Error).message.split("\n")[0]}`);
    }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) {
      throw new BasedError(`--anchors ${file}: not a JSON object`);
    }
    Object.assign(out, obj);
  }
  return out;
}

/** The PyTorch mode compared with a precision of ours: fp32 (TF32 off) with 32-true, bf16 with 16-mixed. */
const TORCH_MODE: Record<Precision, { key: "fp32" | "bf16"; name: string }> = {
  "32-true": { key: "fp32", name: "torch fp32, TF32 off" },
  "16-mixed": { key: "bf16", name: "torch bf16 autocast" },
};

/**
 * The same-machine PyTorch figures for a step row (tokens/s and peak GiB), or null unless the
 * file's step ran this row's workload and has a figure for this precision: like with like.
 */
export function torchStep(
  anchors: TorchAnchors | null,
  workload: string,
  precision: Precision,
): { tokens: { value: number; name: string }; gib: { value: number; name: string } } | null {
  const s = anchors?.step;
  const mode = TORCH_MODE[precision];
  const f = s && s.workload === workload ? s[mode.key] : undefined;
  if (!f || !(f.tokens_per_s > 0) || !(f.peak_gib > 0)) return null;
  return {
    tokens: { value: f.tokens_per_s, name: mode.name },
    gib: { value: f.peak_gib, name: mode.name },
  };
}

/** One line with every PyTorch step figure of the file, or null when it has none. */
export function formatTorchStep(anchors: TorchAnchors | null): string | null {
  const s = anchors?.step;
  if (!s) return null;
  const modes = (["fp32", "tf32", "bf16"] as const).filter((m) => s[m]?.tokens_per_s);
  if (!modes.length) return null;
  return `PyTorch step on this machine (${s.workload}): ` +
    modes.map((m) =>
      `${m} ${Math.round(s[m]!.tokens_per_s).toLocaleString("en-US")} tok/s, ${
        s[m]!.peak_gib.toFixed(1)
      } GiB`
    ).join("; ");
}
