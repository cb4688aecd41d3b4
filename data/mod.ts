/** data/: tokenizer, WikiText reader, token cache, LM windows and samplers, bundled corpus. */
export {
  decode,
  encode,
  encodeRow,
  EOS,
  TOKENIZER_ID,
  TOKENIZER_NAME,
  VOCAB_SIZE,
} from "./tokenize/mod.ts";
export { isBlank, textToRows } from "./rows.ts";
export { type TokenizeOptions, tokenizeRows, tokenizeTextBytes } from "./tokenize/mod.ts";
export { decodeNpyU16, encodeNpyU16, NpyFormatError } from "./npy.ts";
export { CACHE_FORMAT, cacheDirName, type CacheMeta, loadOrBuildSplit } from "./cache.ts";
export {
  findSplitFiles,
  missingSplitError,
  normalizeSplit,
  readSplitRows,
  type Split,
  type SplitFiles,
  SPLITS,
  tokenizeSplitFiles,
  WIKITEXT_CONFIGS,
} from "./wikitext.ts";
export { KJV_SHA256, kjvSplitRows, kjvText } from "./kjv.ts";
export {
  epochPermutation,
  type EvalBatch,
  evalBatches,
  type LMBatch,
  LMDataset,
  type SamplerState,
  TrainSampler,
  type TrainSamplerOptions,
} from "./lm_dataset.ts";
export {
  type DataModule,
  type DataModuleInfo,
  loadDataModule,
  type LoadDataModuleOptions,
} from "./datamodule.ts";
