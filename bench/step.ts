/**
 * The Based-360m training step: forward + backward + clipping + AdamW at
 * batch B × L (default 8 × 2048), on random tokens, timed by the wall clock
 * around several steps with one GPU wait at the end. Also the profile of one
 * step by kernel kind (per-dispatch timestamp queries).
 */
import type { Engine } from "../tensor/engine.ts";
import { backward } from "../tensor/tape.ts";
import { tidy } from "../tensor/tensor.ts";
import { BasedLM } from "../model/based.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import { paramGroup } from "../optim/groups.ts";
import { composeConfig } from "../configs/mod.ts";
import { Random } from "../tensor/random.ts";
import { formatBytes } from "../errors.ts";
import { formatProfile, type ProfileLimits, type ProfileRow } from "../train/profile.ts";
import { MixedPrecision, parsePrecision, type Precision } from "../train/amp.ts";

export { formatProfile };

export interface StepBenchResult {
  experiment: string;
  view: string;
  /** 32-true or 16-mixed (f16 mixed precision with loss scaling) */
  precision: Precision;
  batch: number;
  seqLen: number;
  params: number;
  msPerStep: number;
  tokensPerSec: number;
  /** bytes: pool peak (activations, gradients in flight) + parameter/optimizer arenas */
  peakBytes: number;
  poolPeakBytes: number;
  arenaBytes: number;
  loss: number;
  profile?: ProfileRow[];
}

export async function benchStep(
  e: Engine,
  opts: {
    experiment?: string;
    batch?: number;
    seqLen?: number;
    steps?: number;
    view?: string;
    overrides?: string[];
    profile?: boolean;
    /** the adapter's measured limits, for the profile's per-class ratios */
    limits?: ProfileLimits;
    /** trainer.precision values: 32 (default), 16-mixed, ... */
    precision?: string;
    log?: (s: string) => void;
  } = {},
): Promise<StepBenchResult> {
  const { precision } = parsePrecision(opts.precision ?? "32");
  const amp = precision === "16-mixed" ? MixedPrecision.create(e) : null;
  try {
    return await benchStepWith(e, opts, precision, amp);
  } finally {
    amp?.destroy();
  }
}

async function benchStepWith(
  e: Engine,
  opts: Parameters<typeof benchStep>[1] & object,
  precision: Precision,
  amp: MixedPrecision | null,
): Promise<StepBenchResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const experiment = opts.experiment ?? "example/based-360m";
  const overrides = [`experiment=${experiment}`, "trainer.devices=1", ...(opts.overrides ?? [])];
  if (opts.view) overrides.push(`model.config.alt_mixer.parallel_implementation=${opts.view}`);
  const cfg = composeConfig(overrides) as Record<string, Record<string, unknown>>;
  const L = opts.seqLen ?? Number(cfg.datamodule.max_length);
  const B = opts.batch ?? Number(cfg.datamodule.batch_size);
  const mc = modelConfigFromCfg(cfg.model.config as Record<string, unknown>, L);
  const grouping = (cfg.train as Record<string, unknown>).optimizer_param_grouping as Record<
    string,
    unknown
  >;
  const t0 = performance.now();
  const model = BasedLM.create(e, mc, {
    seed: 1111,
    groupOf: (n, k) => paramGroup(n, k, grouping),
  });
  log(
    `step bench: ${experiment} (${model.store.count.toLocaleString("en-US")} parameters, view ${
      opts.view ?? mc.layers.find((l) => l.kind === "linear")?.view ?? "-"
    }, precision ${precision}), batch ${B} x ${L}; init ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  const opt = cfg.train.optimizer as Record<string, unknown>;
  const adam = new AdamW(model.store, {
    decay: { weightDecay: Number(opt.weight_decay ?? 0.1) },
    no_decay: { weightDecay: 0 },
  }, {
    lr: Number(opt.lr ?? 8e-4),
    betas: (opt.betas as [number, number]) ?? [0.9, 0.95],
    eps: 1e-8,
  });
  const clip = new GradClip(model.store, 1.0, amp?.scaler ?? null);
  const rng = new Random(7);
  const T = B * L;
  const makeBatch = () => {
    const ids = new Int32Array(T + B);
    for (let i = 0; i < ids.length; i++) ids[i] = rng.int(50257);
    const x = new Int32Array(T), y = new Int32Array(T);
    for (let b = 0; b < B; b++) {
      x.set(ids.subarray(b * (L + 1), b * (L + 1) + L), b * L);
      y.set(ids.subarray(b * (L + 1) + 1, b * (L + 1) + L + 1), b * L);
    }
    return {
      ids: e.tensor(x, [B, L], "i32"),
      hostIds: x,
      labels: e.tensor(y, [B, L], "i32"),
      B,
      L,
    };
  };
  const batches = [makeBatch(), makeBatch()];
  let lossT = null as ReturnType<typeof model.loss> | null;
  const step = (i: number) => {
    model.store.zeroGrads();
    lossT?.dispose();
    lossT = tidy(() => {
      const loss = model.loss(batches[i % 2], { gradScale: 1 / T });
      backward(loss);
      return loss;
    });
    clip.compute();
    adam.step(1e-4, { clip });
    amp?.newWeights();
  };
  // warm-up: pipelines compiled, pool filled
  for (let i = 0; i < 2; i++) step(i);
  await e.sync();
  e.pool.resetPeak();
  const n = opts.steps ?? 5;
  const t1 = performance.now();
  for (let i = 0; i < n; i++) step(i);
  const loss = (await e.readF32(lossT!))[0];
  const ms = (performance.now() - t1) / n;
  let profile: StepBenchResult["profile"];
  if (opts.profile && e.hasTimestamps) {
    e.startTiming();
    step(0);
    const m = await e.stopTiming();
    profile = [...m.entries()].map(([kernel, r]) => ({ kernel, ...r })).sort((a, b) => b.ms - a.ms);
  }
  const stats = e.stats();
  const arenaBytes = model.store.chunkSizes.reduce((s, c) => s + c, 0) * 4 * 4; // p, g, m, v
  const result: StepBenchResult = {
    experiment,
    view: opts.view ?? "config",
    precision,
    batch: B,
    seqLen: L,
    params: model.store.count,
    msPerStep: ms,
    tokensPerSec: T / (ms / 1000),
    peakBytes: stats.peak + arenaBytes,
    poolPeakBytes: stats.peak,
    arenaBytes,
    loss,
    profile,
  };
  log(
    `step: ${ms.toFixed(1)} ms, ${
      Math.round(result.tokensPerSec).toLocaleString("en-US")
    } tokens/s, loss ${loss.toFixed(4)}, peak ${formatBytes(result.peakBytes)} (tensors ${
      formatBytes(stats.peak)
    } + parameters/optimizer ${formatBytes(arenaBytes)}; pool reserved ${
      formatBytes(stats.reserved)
    })`,
  );
  if (amp) {
    const sc = await amp.read();
    log(`f16 mixed precision: loss scale ${sc.scale}, ${sc.skipped_steps} skipped steps`);
  }
  if (profile) log(formatProfile(profile, opts.limits));
  lossT?.dispose();
  for (const b of batches) {
    b.ids.dispose();
    b.labels.dispose();
  }
  adam.destroy();
  clip.destroy();
  model.store.destroy();
  e.pool.trim();
  return result;
}
