#!/usr/bin/env bash
# Lab: the f16 tuning + benchmark alone (TUNE=--tune), with the PyTorch anchors measured earlier
# on the same kind of machine (dev/gpu_gemm.sh). Results under $OUT.
set -uo pipefail
export BASED_CACHE_DIR=$OUT/cache
deno run -A --cached-only main.ts bench --only matmul --precision 16-mixed ${TUNE:-} \
  --anchors bench/results/h200-2026-12-03-torch-matmul.json --out $OUT/f16 2>&1 | tee $OUT/f16.log
deno run -A --cached-only dev/f16_probe.ts 2>&1 | tee $OUT/probe.log
