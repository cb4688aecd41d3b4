#!/usr/bin/env bash
# Lab: one GPU run for issue 11's GEMMs (run through .device/on-gpu.sh):
# PyTorch anchors, the fp32 benchmark, f16 tuning (TUNE=--tune) + benchmark. Results under $OUT.
set -uo pipefail
export BASED_CACHE_DIR=$OUT/cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
deno run -A --cached-only dev/matmul_shapes.ts > $OUT/shapes.json
python3 dev/torch_matmul.py $OUT/shapes.json $OUT/torch-matmul.json 2>&1 | tail -4
deno run -A --cached-only main.ts bench --only matmul --precision 32 \
  --anchors $OUT/torch-matmul.json --out $OUT/f32 2>&1 | tee $OUT/f32.log
deno run -A --cached-only main.ts bench --only matmul --precision 16-mixed ${TUNE:-} \
  --anchors $OUT/torch-matmul.json --out $OUT/f16 2>&1 | tee $OUT/f16.log
