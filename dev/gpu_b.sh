#!/usr/bin/env bash
# GPU-machine session B: matmul autotuning, then the Based-360m training step.
set -uo pipefail
export DENO_WEBGPU_BACKEND=vulkan
out=${OUT:-/tmp/out}
export BASED_CACHE_DIR=$out/cache
timeout 240 deno run -A --cached-only main.ts bench --tune --only matmul --out "$out/tuned" 2>&1 | tee "$out/tune.txt" | grep -E "^tune|matmul 4096|lm_head"
timeout 300 deno run -A --cached-only main.ts bench --only step --profile --out "$out" 2>&1 | tee "$out/step.txt"
