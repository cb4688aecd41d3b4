#!/usr/bin/env bash
# GPU-machine session C, with the packed single file dist/based (deno task pack):
# adapter, matmul autotuning, the bandwidth / attention / step benchmarks, a
# Based-360m run through the trainer, and the kernel tests on this GPU.
# Carry: dist, .device/gl (Vulkan loader), .device/deno_dir (npm cache for the tests).
set -uo pipefail
. dev/gpu_env.sh
out=${OUT:-/tmp/out}
export BASED_CACHE_DIR=$out/cache
b=./dist/based
$b info | head -4
echo "== tune"
timeout 200 $b bench --tune --only matmul 2>&1 | grep -E "^tune|4096|lm_head|tuning" | tee "$out/tune.txt"
echo "== bench"
timeout 150 $b bench --only bandwidth,attention,optim --lengths 2048,8192 --out "$out" 2>&1 | grep -v "^adapter" | tee "$out/bench_c.txt"
timeout 120 $b bench --only step --profile 2>&1 | tee "$out/step.txt" | grep -E "^step|chunked|peak"
echo "== based-360m through the trainer (KJV, 3 steps of 8 x 2048)"
CHECKPOINT_DIR=/tmp/ck RESULT_DIR=/tmp/runs timeout 200 $b train experiment=example/based-360m \
  datamodule=kjv datamodule.max_length=2048 datamodule.batch_size=8 train.global_batch_size=8 \
  trainer.max_steps=3 trainer.log_every_n_steps=1 trainer.devices=1 2>&1 | tee "$out/train360m.txt" | tail -12
echo "== kernel tests on this GPU"
deno=$(ls -d "$HOME"/.cache/based/*/deno | head -1)
rm -rf /tmp/deno_dir && cp -r .device/deno_dir /tmp/deno_dir
DENO_DIR=/tmp/deno_dir timeout 200 "$deno" test -A --cached-only tests/kernels/ tests/optim/ 2>&1 | tail -4
