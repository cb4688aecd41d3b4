/**
 * nn.Linear under f16 mixed precision: y = x·Wᵀ + b with x and W rounded to
 * f16 (W's copy from the Autocast, cast once per step), f32 accumulation and
 * output. Saved for backward: the f16 x (half the bytes of the f32 input) and
 * the f16 weight copy. Backward: the incoming gradient (f32, loss-scaled) is
 * rounded to f16 once and feeds both GEMMs, gx = g·W and gW += gᵀ·x (f32
 * accumulation into the parameter's f32 gradient); gb = Σ_rows g in f32.
 */
import { ACCUMULATED, type GradOut, record } from "../../tensor/tape.ts";
import { shapeStr, type Tensor } from "../../tensor/tensor.ts";
import { linear as linearF32 } from "../matmul/mod.ts";
import { sumRowsInto } from "../reduce.ts";
import { type Autocast, autocast } from "./autocast.ts";
import { gemmF16 } from "./gemm.ts";

/** linear() in f16 mixed precision (see the module comment). */
export function linearF16(ac: Autocast, x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (w.rank !== 2) throw new Error(`linear: weight ${shapeStr(w.shape)} is not [out, in]`);
  const [outF, inF] = w.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF) {
    throw new Error(
      `linear: x ${shapeStr(x.shape)} does not end in ${inF} (weight ${shapeStr(w.shape)})`,
    );
  }
  if (bias && bias.size !== outF) {
    throw new Error(`linear: bias ${shapeStr(bias.shape)} for ${outF} outputs`);
  }
  const e = x.engine;
  const T = x.size / inF;
  const xShape = [...x.shape];
  const x16 = ac.cast(x);
  const w16 = ac.weight(w);
  const y = e.empty([...xShape.slice(0, -1), outF]);
  gemmF16(y, x16, w16, { transB: true, bias, m: T, n: outF, k: inF });
  const needX = x.requiresGrad, needW = w.requiresGrad, needB = !!bias?.requiresGrad;
  const inputs = bias ? [x, w, bias] : [x, w];
  const save = [...(needW ? [x16] : []), ...(needX ? [w16] : [])];
  record("linear_f16", inputs, [y], save, ([g], saved, acc) => {
    const xs = needW ? saved[0] : null!, ws = needX ? saved[needW ? 1 : 0] : null!;
    if (!g) return inputs.map(() => null);
    const res: GradOut[] = inputs.map(() => null);
    const g16 = needX || needW ? ac.castGrad(g) : null;
    if (needX) {
      const into = acc[0];
      const gx = into ?? e.empty(xShape);
      gemmF16(gx, g16!, ws, { m: T, n: inF, k: outF, beta: into ? 1 : 0 });
      res[0] = into ? ACCUMULATED : gx;
    }
    if (needW) {
      const into = acc[1];
      const gw = into ?? e.empty([outF, inF]);
      gemmF16(gw, g16!, xs, { transA: true, m: outF, n: inF, k: T, beta: into ? 1 : 0 });
      res[1] = into ? ACCUMULATED : gw;
    }
    g16?.dispose();
    if (needB) {
      const into = acc[2];
      const gb = into ?? e.empty([outF]);
      sumRowsInto(gb, g, !!into);
      res[2] = into ? ACCUMULATED : gb;
    }
    return res;
  });
  x16.dispose();
  return y;
}

/** The model's linear layer: f16 mixed precision while an Autocast is active, else fp32. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const ac = autocast();
  return ac ? linearF16(ac, x, w, bias) : linearF32(x, w, bias);
}
