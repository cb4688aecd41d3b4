#!/usr/bin/env bash
# Lab: the closing GPU run of issues 11 and 13 (through .device/on-gpu.sh):
# the Based-360m step in fp32 and f16 mixed precision, generation throughput,
# the real training path in f16 (based-360m, gradient accumulation) with eval
# of its checkpoint in both precisions, and based-tiny 300 steps fp32 vs f16.
# Logs and JSON land in $OUT (at most 8 files come back).
set -uo pipefail
export NO_COLOR=1 BASED_CACHE_DIR=/tmp/based-cache CHECKPOINT_DIR=/tmp/b/ck
o=${OUT:-/tmp/out}
b=/tmp/b
mkdir -p $b $o
d() { deno run -A --cached-only main.ts "$@"; }
log=$o/final.log
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $log
for p in 32 16-mixed; do
  echo "== bench step $p" | tee -a $log
  timeout 90 bash -c "$(declare -f d); d bench --only step --precision $p --out $b/step-$p" 2>&1 | tee -a $log
  cp $b/step-$p/bench.json $o/step-$p.json 2>/dev/null
done
echo "== bench generate" | tee -a $log
timeout 90 bash -c "$(declare -f d); d bench --only generate --out $b/gen" 2>&1 | tee -a $log
cp $b/gen/bench.json $o/generate.json 2>/dev/null
echo "== based-360m, trainer.precision from the experiment (bf16 -> f16 mixed), 1 step of 32 micro-batches" | tee -a $log
timeout 120 bash -c "$(declare -f d); d train experiment=example/based-360m trainer.devices=1 datamodule=kjv \
  trainer.max_steps=1 train.scheduler.warmup_t=0 trainer.limit_val_batches=2 trainer.limit_test_batches=0 \
  trainer.log_every_n_steps=1 callbacks.model_checkpoint.every_n_train_steps=1 hydra.run.dir=$b/run360" 2>&1 \
  | grep -v '^\s*$' | tail -25 | tee -a $log
ck=$(ls -d $b/ck/*/step_* 2>/dev/null | tail -1)
for p in 32 16-mixed; do
  echo "== eval $ck --precision $p" | tee -a $log
  [ -n "$ck" ] && timeout 45 bash -c "$(declare -f d); d eval --checkpoint $ck --precision $p --split validation --limit 2" 2>&1 | tail -4 | tee -a $log
done
for p in 32 16-mixed; do
  echo "== based-tiny 300 steps, precision $p" | tee -a $log
  timeout 60 bash -c "$(declare -f d); d train experiment=example/based-tiny trainer.max_steps=300 trainer.precision=$p \
    trainer.limit_val_batches=1.0 hydra.run.dir=$b/tiny-$p" 2>&1 | grep -iE 'val|test|skipped|error' | tail -6 | tee -a $log
  cp $b/tiny-$p/metrics.jsonl $o/tiny-$p.jsonl 2>/dev/null
done
