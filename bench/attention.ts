/**
 * Linear-attention (and sliding-window) timings: forward and forward+backward
 * per view and sequence length, on the GPU clock (timestamp queries through
 * `Engine.measure`), after a warm-up, median over repeats, inputs freshly
 * drawn on the GPU for every (view, L). A small correctness spot check against
 * the float64 reference runs first, so a broken kernel never gets timed.
 *
 *   deno run -A bench/attention.ts [views=quadratic,chunked,cumsum] [lengths=512,2048] [B=8] [H=16]
 */
import { type Engine, initEngine } from "../tensor/engine.ts";
import { formatBytes } from "../errors.ts";
import { backward, noGrad } from "../tensor/tape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import {
  CHUNK,
  linearAttention,
  type LinearAttentionView,
} from "../kernels/linear_attention/mod.ts";
import * as ref from "../kernels/linear_attention/reference.ts";
import { slidingWindowAttention } from "../kernels/sliding_window.ts";
import { median } from "./report.ts";
import { randomTensor } from "./random.ts";

export interface AttentionBenchRow {
  view: LinearAttentionView | "sliding_window";
  L: number;
  fwdMs: number;
  fwdBwdMs: number;
}

const F = 16;
const D = 64;

/** Uniform values of unit variance: fresh inputs made on the GPU. */
function random(e: Engine, shape: number[], seed: number, grad = false): Tensor {
  const t = randomTensor(e, shape, seed, Math.sqrt(3));
  t.requiresGrad = grad;
  return t;
}

/** Checks every view against the float64 reference on a small case (throws on a mismatch). */
async function spotCheck(e: Engine, views: LinearAttentionView[]): Promise<void> {
  const s = { B: 1, L: 100, H: 2, F, D };
  const n = s.B * s.L * s.H;
  let seed = 12345;
  const rnd = (m: number) =>
    Float64Array.from({ length: m }, () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return Math.fround((seed / 2 ** 32) * 2 - 1);
    });
  const q = rnd(n * F), k = rnd(n * F), v = rnd(n * D), dy = rnd(n * D);
  const want = ref.reference(q, k, v, s).y;
  const wantG = ref.referenceBackward(q, k, v, dy, s);
  for (const view of views) {
    const tq = e.tensor(Float32Array.from(q), [1, s.L, s.H, F]);
    const tk = e.tensor(Float32Array.from(k), [1, s.L, s.H, F]);
    const tv = e.tensor(Float32Array.from(v), [1, s.L, s.H, D]);
    const tdy = e.tensor(Float32Array.from(dy), [1, s.L, s.H, D]);
    for (const t of [tq, tk, tv]) t.requiresGrad = true;
    const y = linearAttention(tq, tk, tv, { view });
    const got = await e.readF32(y);
    backward(y, tdy);
    const pairs: [string, ArrayLike<number>, Float64Array][] = [
      ["y", got, want],
      ["dq", await e.readF32(tq.grad!), wantG.dq],
      ["dk", await e.readF32(tk.grad!), wantG.dk],
      ["dv", await e.readF32(tv.grad!), wantG.dv],
    ];
    for (const [what, a, b] of pairs) {
      let worst = 0;
      for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      if (!(worst < 2e-5)) {
        throw new Error(`attention bench: ${view} ${what} is off by ${worst} — not timing it`);
      }
    }
    for (const t of [tq, tk, tv, tdy, y, tq.grad!, tk.grad!, tv.grad!]) t.dispose();
  }
}

/** Bytes of the largest single buffer a view needs (must fit one storage binding). */
function largestBuffer(view: LinearAttentionView, B: number, L: number, H: number): number {
  const act = B * L * H * D * 4;
  if (view !== "chunked") return act;
  const states = B * H * Math.ceil(L / CHUNK) * 160 * (D + 1) * 4;
  return Math.max(act, states);
}

/**
 * Times linear attention per view and length: forward only (no tape) and
 * forward + backward (into leaf gradients). Defaults: B = 8, H = 16, F = 16,
 * D = 64, L ∈ {512, 1024, 2048, 4096, 8192}, 5 repeats.
 */
export async function benchAttention(
  e: Engine,
  opts: {
    views?: LinearAttentionView[];
    lengths?: number[];
    B?: number;
    H?: number;
    repeats?: number;
  } = {},
): Promise<AttentionBenchRow[]> {
  const views = opts.views ?? ["quadratic", "chunked", "cumsum"];
  const lengths = opts.lengths ?? [512, 1024, 2048, 4096, 8192];
  const B = opts.B ?? 8, H = opts.H ?? 16, reps = opts.repeats ?? 5;
  await spotCheck(e, views);
  const rows: AttentionBenchRow[] = [];
  let seed = 1;
  for (const L of lengths) {
    for (const view of views) {
      const big = largestBuffer(view, B, L, H);
      if (big > e.maxBinding) {
        console.log(
          `skip ${view} L=${L}: needs a ${formatBytes(big)} buffer, over the ${
            formatBytes(e.maxBinding)
          } binding limit`,
        );
        continue;
      }
      const q = random(e, [B, L, H, F], seed++, true);
      const k = random(e, [B, L, H, F], seed++, true);
      const v = random(e, [B, L, H, D], seed++, true);
      const dy = random(e, [B, L, H, D], seed++);
      const step = () => {
        const y = linearAttention(q, k, v, { view });
        backward(y, dy);
        y.dispose();
      };
      step(); // warm-up: pipelines, pool buffers, leaf gradients
      await e.sync();
      const fwd: number[] = [], both: number[] = [];
      for (let r = 0; r < reps; r++) {
        let y: Tensor | null = null;
        fwd.push(
          await e.measure(() => {
            y = noGrad(() => linearAttention(q, k, v, { view }));
          }),
        );
        (y as Tensor | null)?.dispose();
        both.push(await e.measure(step));
      }
      rows.push({ view, L, fwdMs: median(fwd), fwdBwdMs: median(both) });
      for (const t of [q.grad, k.grad, v.grad, q, k, v, dy]) t?.dispose();
      await e.sync();
      e.pool.trim();
    }
  }
  return rows;
}

/** Sliding-window attention timings (B, H, Dh = 64, window 128 by default). */
export async function benchSlidingWindow(
  e: Engine,
  opts: {
    lengths?: number[];
    B?: number;
    H?: number;
    Dh?: number;
    window?: number;
    repeats?: number;
  } = {},
): Promise<AttentionBenchRow[]> {
  const lengths = opts.lengths ?? [512, 1024, 2048, 4096, 8192];
  const B = opts.B ?? 8, H = opts.H ?? 16, Dh = opts.Dh ?? 64, reps = opts.repeats ?? 5;
  const rows: AttentionBenchRow[] = [];
  let seed = 1000;
  for (const L of lengths) {
    const qkv = random(e, [B, L, 3, H, Dh], seed++, true);
    const dy = random(e, [B, L, H, Dh], seed++);
    const opt = { window: opts.window ?? 128 };
    const step = () => {
      const y = slidingWindowAttention(qkv, opt);
      backward(y, dy);
      y.dispose();
    };
    step();
    await e.sync();
    const fwd: number[] = [], both: number[] = [];
    for (let r = 0; r < reps; r++) {
      let y: Tensor | null = null;
      fwd.push(
        await e.measure(() => {
          y = noGrad(() => slidingWindowAttention(qkv, opt));
        }),
      );
      (y as Tensor | null)?.dispose();
      both.push(await e.measure(step));
    }
    rows.push({ view: "sliding_window", L, fwdMs: median(fwd), fwdBwdMs: median(both) });
    for (const t of [qkv.grad, qkv, dy]) t?.dispose();
    await e.sync();
    e.pool.trim();
  }
  return rows;
}

if (import.meta.main) {
  const args = Object.fromEntries(Deno.args.map((a) => a.split("=", 2) as [string, string]));
  const e = await initEngine();
  console.log(`adapter: ${e.info.name} (${e.info.backend}), timestamps: ${e.hasTimestamps}`);
  const lengths = args.lengths?.split(",").map(Number);
  const B = args.B ? Number(args.B) : undefined, H = args.H ? Number(args.H) : undefined;
  const views = args.views?.split(",").filter((v) => v !== "sliding_window") as
    | LinearAttentionView[]
    | undefined;
  const rows = views?.length === 0 ? [] : await benchAttention(e, { views, lengths, B, H });
  if (!args.views || args.views.includes("sliding_window")) {
    rows.push(...await benchSlidingWindow(e, { lengths, B, H }));
  }
  console.log("view            L      fwd ms   fwd+bwd ms");
  for (const r of rows) {
    console.log(
      `${r.view.padEnd(15)} ${String(r.L).padEnd(6)} ${r.fwdMs.toFixed(3).padStart(8)} ${
        r.fwdBwdMs.toFixed(3).padStart(11)
      }`,
    );
  }
}
