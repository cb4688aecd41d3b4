#!/usr/bin/env bash
# Lab: session G of issue 11 (through .device/on-gpu.sh), in two calls of at most 10 minutes.
#   PART=tune  the f16 GEMM re-tuned over the whole candidate space for every model shape
#              (the 4x4 / 4x8 per-thread tiles had been tuned at 4096^3 only), then the matmul
#              benchmark in both precisions beside the stored PyTorch matmul anchors; the
#              tuning table comes back in $OUT/cache for kernels/matmul/tuning/.
#   PART=step  PyTorch's Based-360m step on the same GPU (dev/gpu_torch_step.sh: the fixture
#              check, then fp32 / TF32 / bf16), then ours in fp32 and f16 mixed beside it
#              (FIXTURES=folder of the reference fixtures, carried along).
#   PART=f16   after the saved activations went f16: the f16 step again (TORCH_STEP=the PyTorch
#              step anchors of PART=step), and based-tiny 300 steps in f16 and fp32.
set -uo pipefail
export NO_COLOR=1
o=${OUT:-/tmp/out}
mkdir -p "$o"
d() { deno run -A --cached-only main.ts "$@"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$o/gpu.txt"
anchors=bench/results/h200-2026-12-03-torch-matmul.json
case "${PART:-tune}" in
tune)
  export BASED_CACHE_DIR=$o/cache
  d bench --only matmul --precision 16-mixed --tune --anchors $anchors --out "$o/f16" 2>&1 | tee "$o/tune.log"
  d bench --only matmul --precision 32 --anchors $anchors --out "$o/f32" 2>&1 | tee "$o/f32.log"
  ;;
step)
  export BASED_CACHE_DIR=/tmp/based-cache
  OUT=$o/torch FIXTURES=${FIXTURES:-.shared/fixtures} timeout 240 bash dev/gpu_torch_step.sh 2>&1 | tee "$o/torch.log"
  a=$anchors
  [ -f "$o/torch/torch-step.json" ] && a=$anchors,$o/torch/torch-step.json
  for p in 32 16-mixed; do
    timeout 110 bash -c "$(declare -f d); d bench --only step --precision $p --anchors $a --out $o/step-$p" 2>&1 | tee "$o/step-$p.log"
  done
  ;;
f16)
  export BASED_CACHE_DIR=/tmp/based-cache CHECKPOINT_DIR=/tmp/g/ck
  timeout 110 bash -c "$(declare -f d); d bench --only step --precision 16-mixed --anchors $anchors,$TORCH_STEP --out $o/step-16-mixed" 2>&1 | tee "$o/step-16-mixed.log"
  for p in 16-mixed 32; do
    timeout 75 bash -c "$(declare -f d); d train experiment=example/based-tiny trainer.max_steps=300 trainer.precision=$p \
      trainer.limit_val_batches=1.0 hydra.run.dir=/tmp/g/tiny-$p" 2>&1 | grep -iE 'val|test|skipped|error' | tail -6 | tee -a "$o/tiny.log"
    cp /tmp/g/tiny-$p/metrics.jsonl "$o/tiny-$p.jsonl" 2>/dev/null
  done
  ;;
esac
ls -R "$o" | head -40
