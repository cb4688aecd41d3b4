/**
 * The training loop (the reference's `train/tasks/seq.py` under Lightning;
 * docs/reference.md, Training): micro-batches with gradient accumulation,
 * global-norm clipping, AdamW with the timm cosine schedule, validation every
 * val_check_interval, test at the end, crash-safe checkpoints and resume.
 * A step is recorded into one command encoder per micro-batch upload; the
 * only readbacks are the loss and grad norm at logging steps, evaluations and
 * checkpoints.
 */
import { join, resolve } from "node:path";
import { type Engine, initEngine } from "../tensor/engine.ts";
import { BasedError, formatBytes } from "../errors.ts";
import { backward, clearTape, noGrad } from "../tensor/tape.ts";
import { type Tensor, tidy } from "../tensor/tensor.ts";
import { accumulate, fill } from "../kernels/elementwise.ts";
import { BasedLM, type Batch, EMBEDDING } from "../model/based.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import { paramGroup } from "../optim/groups.ts";
import { lrAt, scheduleFromConfig } from "../optim/schedule.ts";
import { type Config, toYaml } from "../config/mod.ts";
import { loadDataModule } from "../data/datamodule.ts";
import { type LMDataset, TrainSampler } from "../data/lm_dataset.ts";
import { ensureWritableDir, latestCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { checkShapes } from "./integrity.ts";
import { MetricsLog, writePlots } from "./metrics.ts";
import { Progress, stepLine } from "./progress.ts";
import { formatProfile } from "./profile.ts";
import { loadTuningCache } from "../kernels/matmul/mod.ts";
import { batchCount, readSettings, type TrainSettings } from "./settings.ts";
import { DataParallel } from "../parallel/data_parallel.ts";
import { LM_HEAD, withLmHead } from "../hf/tied.ts";
import { initFrom } from "../hf/hooks.ts";
import { findCheckpoint } from "./restore.ts";
import { bindingLimitError, checkTokenIds, isBindingLimitError } from "./preflight.ts";
import { MixedPrecision, precisionForAdapter, scalerOptions, withPrecision } from "./amp.ts";
import type { ScalerState } from "../optim/scaler.ts";

export interface TrainOptions {
  cwd?: string;
  log?: (s: string) => void;
  /** stop after this many optimizer steps of this process (tests: simulated crash points) */
  stopAfter?: number;
  engine?: Engine;
}

export interface TrainResult {
  steps: number;
  losses: Map<number, number>;
  val: { step: number; loss: number; ppl: number }[];
  test?: { loss: number; ppl: number };
  runDir: string;
  checkpointDir: string;
}

/** Uploads a batch's token ids and labels. */
function uploadBatch(
  e: Engine,
  ds: LMDataset,
  indices: number[],
  L: number,
): Batch & { labels: Tensor } {
  const { inputs, labels } = ds.batch(indices);
  const B = indices.length;
  return {
    ids: e.tensor(inputs, [B, L], "i32"),
    hostIds: inputs,
    labels: e.tensor(labels, [B, L], "i32"),
    B,
    L,
  };
}

/**
 * Token-weighted mean loss over a split (`train/metrics/perplexity.py`); one readback at the end.
 */
export async function evaluate(
  e: Engine,
  model: BasedLM,
  ds: LMDataset,
  opts: { batchSize: number; limitBatches?: number; seqLen: number },
): Promise<{ loss: number; ppl: number; tokens: number }> {
  const total = e.empty([1]);
  fill(total, 0);
  let tokens = 0, batches = 0;
  const limit = opts.limitBatches ?? Infinity;
  for (let i = 0; i < ds.length && batches < limit; i += opts.batchSize) {
    const idx = [];
    for (let j = i; j < Math.min(ds.length, i + opts.batchSize); j++) idx.push(j);
    const b = uploadBatch(e, ds, idx, opts.seqLen);
    const T = b.B * b.L;
    // sum of token losses = mean × T, accumulated in a fixed order (deterministic)
    noGrad(() => tidy(() => accumulate(total, model.loss(b), T)));
    b.ids.dispose();
    b.labels.dispose();
    tokens += T;
    batches++;
  }
  const sum = (await e.readF32(total))[0];
  total.dispose();
  const loss = sum / Math.max(1, tokens);
  return { loss, ppl: Math.exp(loss), tokens };
}

export async function train(config: Config, opts: TrainOptions = {}): Promise<TrainResult> {
  // +init_from=DIR: fine-tune from a snapshot's or checkpoint's weights (and its model config)
  const init = await initFrom(config, (p) => findCheckpoint(p, opts.log), opts.log ?? console.log);
  const cfg = init?.cfg ?? config;
  let S: TrainSettings = readSettings(cfg, opts.cwd ?? Deno.cwd());
  // ddp (parallel/): trainer.devices > 1 = one process per device; rank 0 alone writes and logs
  const dp = await DataParallel.init(S.devices);
  const root = dp === null || dp.isRoot;
  const log = root ? opts.log ?? ((s: string) => console.log(s)) : () => {};
  const e = opts.engine ?? await initEngine();
  log(`adapter: ${e.info.name} (${e.info.backend})`);
  const run = precisionForAdapter(
    { precision: S.precision, note: S.precisionNote },
    { hasF16: e.hasF16, name: e.info.name },
  );
  if (run.line) log(run.line);
  if (run.precision !== S.precision) S = { ...S, precision: run.precision };
  // f16 mixed precision (train/amp.ts): loss scaler + autocast, active until the end of the run
  const amp = S.precision === "16-mixed" ? MixedPrecision.create(e, scalerOptions(cfg)) : null;
  try {
    return await trainWith(e, cfg, S, opts, dp, log, amp, init?.weights);
  } finally {
    amp?.destroy();
  }
}

async function trainWith(
  e: Engine,
  cfg: Config,
  S: TrainSettings,
  opts: TrainOptions,
  dp: DataParallel | null,
  log: (s: string) => void,
  amp: MixedPrecision | null,
  initWeights: Parameters<BasedLM["store"]["load"]>[0] | undefined,
): Promise<TrainResult> {
  const cwd = opts.cwd ?? Deno.cwd();
  const root = dp === null || dp.isRoot, world = dp?.world ?? 1;
  const tuned = await loadTuningCache(e); // matmul tile choices measured on this adapter
  if (tuned) log(`matmul tuning: ${tuned} shapes`);

  // ---- data
  // ddp: with a token cache, rank 0 builds it first and the other ranks then read it
  const staged = dp !== null && Boolean((cfg.datamodule as Record<string, unknown>)?.cache_dir);
  if (staged && !root) await dp.barrier();
  const dm = await loadDataModule(cfg.datamodule as Record<string, unknown>, { cwd, log });
  if (staged && root) await dp.barrier();
  const L = S.maxLength;
  if (dm.train.length < 1) {
    throw new BasedError(
      "the training split is shorter than one sequence",
      "use a larger corpus or a smaller datamodule.max_length",
    );
  }

  // trainer.limit_*_batches as batch counts (undefined: the whole split; 0: none)
  const valBatches = batchCount(
    S.limitValBatches,
    Math.ceil(dm.validation.length / S.batchSizeEval),
    "trainer.limit_val_batches",
  );
  const testBatches = batchCount(
    S.limitTestBatches,
    Math.ceil(dm.test.length / S.batchSizeEval),
    "trainer.limit_test_batches",
  );

  // ---- model and optimizer
  const mc = S.model;
  checkTokenIds(dm, mc.vocabSize, ["train", "validation", "test"]);
  const groupOf = (name: string, kind: Parameters<typeof paramGroup>[1]) =>
    paramGroup(name, kind, S.grouping);
  const model = BasedLM.create(e, mc, { seed: S.seed, groupOf });
  log(
    `model: ${model.store.count.toLocaleString("en-US")} parameters, ${mc.nLayer} layers ` +
      `(${mc.layers.map((l) => l.kind[0]).join("")}), vocabulary ${mc.vocabPadded}`,
  );
  const adam = new AdamW(model.store, {
    decay: { weightDecay: S.weightDecay },
    no_decay: { weightDecay: 0 },
  }, { lr: S.lr, betas: S.betas, eps: S.eps });
  const clip = new GradClip(model.store, S.clipNorm, amp?.scaler ?? null);
  const sched = scheduleFromConfig(S.scheduler, S.lr);
  const sampler = new TrainSampler(dm.train.length, {
    seed: S.dataSeed,
    batchSize: S.batchSize,
    worldSize: world,
    rank: dp?.rank ?? 0,
  });

  // ---- run directory, checkpoints
  if (root) {
    await ensureWritableDir(S.runDir, "run", "hydra.run.dir");
    await ensureWritableDir(S.checkpointDir, "checkpoint", "callbacks.model_checkpoint.dirpath");
    // what ran: trainer.precision as run (bf16 -> 16-mixed)
    await Deno.writeTextFile(
      join(S.runDir, "config.yaml"),
      toYaml(withPrecision(cfg, S.precision)),
    );
  }
  const metrics = new MetricsLog(join(S.runDir, "metrics.jsonl"));
  let step = 0;
  const losses = new Map<number, number>();
  const val: TrainResult["val"] = [];
  let tokensSeen = 0;
  /** the newest checkpoint of this run (resumed from or written) */
  let lastCheckpoint: string | null = null;
  if (initWeights) model.store.load(initWeights); // resume (below) takes precedence when it finds one
  if (S.resume) {
    const ck = await latestCheckpoint(S.checkpointDir, log);
    if (ck) {
      checkShapes(ck.dir, model.store.params, ck.shapes.weights, ck.shapes.optimizer);
      model.store.load(ck.weights);
      adam.loadState(ck.optimizer, ck.state.optimizer as { step: number });
      sampler.restore(ck.state.data as ReturnType<TrainSampler["state"]>);
      step = ck.state.step;
      tokensSeen = Number(ck.state.tokens ?? 0);
      amp?.load((ck.state as { scaler?: unknown }).scaler);
      lastCheckpoint = ck.dir;
      log(`resumed from ${ck.dir} (step ${step})`);
    } else log(`resume: no complete checkpoint in ${S.checkpointDir}; starting from scratch`);
  }
  await dp?.broadcastParams(model.store); // ddp: every rank starts from rank 0's weights

  // ---- loop
  const lossSum = e.empty([1]);
  const progress = new Progress(S.maxSteps, step, { quiet: S.quiet || !root });
  if (!root) progress.log = () => {}; // ddp: other ranks are quiet
  let tLog = performance.now(), stepsSinceLog = 0, tokensSinceLog = 0;
  const startStep = step;
  const stopAt = opts.stopAfter !== undefined ? step + opts.stopAfter : Infinity;
  // steps up to this one had a finite loss and finite gradients (checked at logging steps and
  // before every checkpoint, so that no checkpoint holds a state after a non-finite step)
  let finiteUpTo = step;
  const checkFinite = async (loss: number): Promise<void> => {
    if (amp) {
      // f16: skipped steps (overflowed gradients) are part of loss scaling; only a run of them fails
      amp.check(await amp.read(), step, lastCheckpoint ? "the last checkpoint is kept" : "");
      finiteUpTo = step;
      return;
    }
    if (Number.isFinite(loss) && !(await clip.nonFinite())) {
      finiteUpTo = step;
      return;
    }
    const keep = lastCheckpoint
      ? `the last good checkpoint ${lastCheckpoint} is kept`
      : "no checkpoint was written";
    throw new BasedError(
      step - finiteUpTo > 1
        ? `the loss or the gradients became non-finite between step ${finiteUpTo + 1} and ` +
          `step ${step} (loss ${loss} at step ${step}; the non-finite updates were skipped)`
        : `the loss became ${loss} at step ${step} (non-finite gradients: the update was skipped)`,
      `lower train.optimizer.lr; ${keep}`,
    );
  };
  // The loss checked above is that of the weights before this step's update; the checkpoint
  // holds the weights after it. Before writing them, their loss on the next training batch (the
  // one a resume would train on first; the data position is left as it was) must be finite.
  const checkSavedWeights = async (): Promise<void> => {
    const at = sampler.state();
    const b = uploadBatch(e, dm.train, sampler.next(), L);
    sampler.restore(at);
    const t = noGrad(() => tidy(() => model.loss(b)));
    let loss = (await e.readF32(t))[0];
    t.dispose();
    b.ids.dispose();
    b.labels.dispose();
    if (dp) loss = (await dp.allreduceMean([loss]))[0];
    if (Number.isFinite(loss)) return;
    const keep = lastCheckpoint
      ? `the last good checkpoint ${lastCheckpoint} is kept`
      : "no checkpoint was written";
    throw new BasedError(
      `the loss became ${loss} at step ${step + 1} (the weights after step ${step}'s update, ` +
        `checked before writing their checkpoint, which was not written)`,
      `lower train.optimizer.lr; ${keep}`,
    );
  };
  try {
    while (step < S.maxSteps && step < stopAt) {
      const lr = lrAt(step, sched); // optimizer step s = step + 1 uses f(s − 1)
      // +profile=true: the second step of this process is timed per kernel kind
      const profiling = S.profile && step === startStep + 1 && e.hasTimestamps;
      if (profiling) e.startTiming();
      model.store.zeroGrads();
      fill(lossSum, 0);
      for (let m = 0; m < S.accumulate; m++) {
        const b = uploadBatch(e, dm.train, sampler.next(), L);
        try {
          tidy(() => {
            // each micro-batch's loss is its token mean, backpropagated / accumulate (as Lightning)
            const loss = model.loss(b, { gradScale: 1 / (b.B * L * S.accumulate) });
            backward(loss);
            accumulate(lossSum, loss);
          });
        } catch (err) {
          if (!isBindingLimitError(err)) throw err;
          clearTape(); // over the adapter's binding limit: measure the micro-batch that fits
          throw bindingLimitError(e, err, b.B, S.batchSize, (n) => {
            const p = uploadBatch(e, dm.train, [...Array(n).keys()], L);
            tidy(() => backward(model.loss(p, { gradScale: 1 })));
            clearTape();
            p.ids.dispose();
            p.labels.dispose();
          });
        }
        b.ids.dispose();
        b.labels.dispose();
        tokensSeen += b.B * L * world;
        tokensSinceLog += b.B * L * world;
      }
      if (dp) await dp.allreduceGrads(model.store); // ddp: mean of the ranks' gradients
      clip.compute();
      adam.step(lr, { clip });
      amp?.newWeights();
      if (profiling) {
        const prof = await e.stopTiming();
        progress.log(
          formatProfile([...prof.entries()].map(([kernel, r]) => ({ kernel, ...r }))),
        );
      }
      step++;
      stepsSinceLog++;
      const logNow = step % S.logEvery === 0 || step === S.maxSteps || step === 1;
      if (logNow) {
        let loss = (await e.readF32(lossSum))[0] / S.accumulate;
        if (dp) loss = (await dp.allreduceMean([loss]))[0]; // ddp: mean over ranks
        const norm = await clip.readNorm();
        const ms = (performance.now() - tLog) / stepsSinceLog;
        const tps = tokensSinceLog / ((performance.now() - tLog) / 1000);
        losses.set(step, loss);
        const info = { step, total: S.maxSteps, loss, lr, gradNorm: norm, ms, tokPerSec: tps };
        const sc = amp ? await amp.read() : null;
        progress.log(
          stepLine(info) + (sc ? ` | scale ${sc.scale} | skipped ${sc.skipped_steps}` : ""),
        );
        progress.update(info);
        if (root) {
          await metrics.append({
            split: "train",
            step,
            loss,
            ppl: Math.exp(loss),
            lr,
            grad_norm: norm,
            ms_per_step: ms,
            tokens_per_s: tps,
            tokens: tokensSeen,
            ...(sc ? { loss_scale: sc.scale, skipped_steps: sc.skipped_steps } : {}),
          });
        }
        await checkFinite(loss);
        tLog = performance.now();
        stepsSinceLog = 0;
        tokensSinceLog = 0;
      }
      if (root && S.valEvery > 0 && step % S.valEvery === 0 && valBatches !== 0) {
        const r = await evaluate(e, model, dm.validation, {
          batchSize: S.batchSizeEval,
          limitBatches: valBatches,
          seqLen: L,
        });
        val.push({ step, loss: r.loss, ppl: r.ppl });
        progress.log(
          `val   step ${step} | loss ${r.loss.toFixed(6)} | ppl ${
            r.ppl.toFixed(3)
          } | ${r.tokens} tokens`,
        );
        await metrics.append({ split: "val", step, loss: r.loss, ppl: r.ppl, tokens: r.tokens });
        await writePlots(S.runDir);
        tLog = performance.now();
      }
      const ckptNow = S.ckptEvery > 0 && (step % S.ckptEvery === 0 || step === S.maxSteps);
      if (ckptNow && finiteUpTo < step) {
        await checkFinite((await e.readF32(lossSum))[0] / S.accumulate); // every rank (ddp)
      }
      if (ckptNow) await checkSavedWeights(); // every rank (ddp)
      if (root && ckptNow) {
        const scaler = amp ? await amp.read() : undefined;
        const dir = await writeCheckpoint(model, adam, sampler, S, step, tokensSeen, cfg, scaler);
        lastCheckpoint = dir;
        progress.log(`checkpoint ${dir}`);
        tLog = performance.now();
      }
    }
  } finally {
    progress.stop();
    clearTape();
    lossSum.dispose();
  }
  let test: TrainResult["test"];
  if (root && step >= S.maxSteps && S.doTest && testBatches !== 0) {
    const r = await evaluate(e, model, dm.test, {
      batchSize: S.batchSizeEval,
      limitBatches: testBatches,
      seqLen: L,
    });
    test = { loss: r.loss, ppl: r.ppl };
    log(`test  loss ${r.loss.toFixed(6)} | ppl ${r.ppl.toFixed(3)} | ${r.tokens} tokens`);
    await metrics.append({ split: "test", step, loss: r.loss, ppl: r.ppl, tokens: r.tokens });
  }
  metrics.close();
  try {
    await writePlots(S.runDir);
  } catch { /* no metrics yet */ }
  log(
    `peak GPU memory in tensors: ${formatBytes(e.stats().peak)}; run directory ${
      resolve(S.runDir)
    }`,
  );
  model.store.destroy();
  adam.destroy?.();
  await dp?.finalize(); // ddp
  return { steps: step, losses, val, test, runDir: S.runDir, checkpointDir: S.checkpointDir };
}

async function writeCheckpoint(
  model: BasedLM,
  adam: AdamW,
  sampler: TrainSampler,
  S: TrainSettings,
  step: number,
  tokens: number,
  cfg: Config,
  scaler?: ScalerState,
): Promise<string> {
  // with lm_head.weight, as PyTorch's state_dict of the reference has it (load_state_dict strict)
  const weights = withLmHead(await model.store.read("values"));
  const st = await adam.state();
  const optimizer = new Map<string, Float32Array>();
  for (const [n, v] of st.m) optimizer.set(`exp_avg.${n}`, v);
  for (const [n, v] of st.v) optimizer.set(`exp_avg_sq.${n}`, v);
  const shapes = new Map<string, number[]>();
  for (const p of model.store.params) {
    shapes.set(p.name, p.shape);
    shapes.set(`exp_avg.${p.name}`, p.shape);
    shapes.set(`exp_avg_sq.${p.name}`, p.shape);
  }
  shapes.set(LM_HEAD, shapes.get(EMBEDDING)!);
  return await saveCheckpoint(S.checkpointDir, {
    weights,
    optimizer,
    state: {
      step,
      tokens,
      optimizer: { step: st.step },
      data: sampler.state(),
      config: withPrecision(cfg, S.precision),
      ...(scaler ? { scaler } : {}),
    },
  }, { shapes, keep: S.keepCheckpoints });
}
