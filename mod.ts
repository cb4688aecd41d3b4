/**
 * based — the library's public surface: the engine (device, tensors, tape,
 * parameter arenas, safetensors), the kernels as differentiable ops, the
 * Based model, the optimizer, data, config composition and training.
 *
 * ```ts
 * import { initEngine, composeConfig, train } from "./mod.ts";
 * const cfg = composeConfig(["experiment=example/based-tiny"]);
 * await train(cfg);
 * ```
 */
export * from "./tensor/mod.ts";
export { Random } from "./tensor/random.ts";

// kernels (differentiable ops unless noted)
export {
  accumulate,
  add,
  axpy,
  clone,
  copyInto,
  fill,
  mul,
  scale,
  silu,
  sub,
  swiglu,
} from "./kernels/elementwise.ts";
export { gemm, linear, matmul } from "./kernels/matmul/mod.ts";
export { mean, sum, sumAll, sumRowsInto } from "./kernels/reduce.ts";
export { concat, narrow, permute, reshape, split, transpose } from "./kernels/layout.ts";
export { softmax } from "./kernels/softmax.ts";
export { addRmsNorm, rmsNorm } from "./kernels/rmsnorm.ts";
export { embedding } from "./kernels/embedding.ts";
export { crossEntropy, crossEntropyRows } from "./kernels/cross_entropy.ts";
export { causalConv1d } from "./kernels/conv1d.ts";
export { rotary, rotaryQK } from "./kernels/rotary.ts";
export {
  linearAttention,
  linearAttentionForward,
  linearAttentionPrefill,
  linearAttentionState,
  linearAttentionStep,
  type LinearAttentionView,
  resolveView,
  taylorFeatureMap,
} from "./kernels/linear_attention/mod.ts";
export { slidingWindowAttention } from "./kernels/sliding_window.ts";

// model
export { BasedLM, type Batch, EMBEDDING } from "./model/based.ts";
export { type BasedConfig, type MixerConfig, modelConfigFromCfg } from "./model/config.ts";
export { declareParams, initValues, type ParamDecl } from "./model/params.ts";
export { lmHeadLogits, lmHeadLoss } from "./model/lm_head.ts";
export { runParity } from "./parity/parity.ts";

// optimizer, data, config, training
export * from "./optim/mod.ts";
export { loadDataModule } from "./data/datamodule.ts";
export { evalBatches, LMDataset, TrainSampler } from "./data/lm_dataset.ts";
export { decode, encode, EOS } from "./data/tokenize/mod.ts";
export { applyOverrides, type Config, toYaml } from "./config/mod.ts";
export { composeConfig } from "./configs/mod.ts";
export { evaluate, train, type TrainResult } from "./train/loop.ts";
export { latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./train/checkpoint.ts";
