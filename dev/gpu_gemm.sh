#!/usr/bin/env bash
# Lab: one GPU run for issue 11's GEMMs (run through .device/on-gpu.sh):
# PyTorch anchors, f16 tuning + benchmark, fp32 benchmark. Results under $OUT.
set -uo pipefail
export BASED_CACHE_DIR=$OUT/cache PYTHONUNBUFFERED=1
deno run -A --cached-only dev/matmul_shapes.ts > $OUT/shapes.json
python3 dev/torch_matmul.py $OUT/shapes.json $OUT/torch-matmul.json 2>&1 | tail -3
deno run -A --cached-only main.ts bench --only matmul --precision 16-mixed ${TUNE:-} \
  --anchors $OUT/torch-matmul.json --out $OUT/f16 2>&1 | tee $OUT/f16.log
deno run -A --cached-only main.ts bench --only matmul --precision 32 \
  --anchors $OUT/torch-matmul.json --out $OUT/f32 2>&1 | tee $OUT/f32.log
