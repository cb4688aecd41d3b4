#!/usr/bin/env bash
# GPU-machine session D: tune the LM-head GEMMs, the step with the complete
# table, and the kernel tests on this GPU (failures in full).
set -uo pipefail
. dev/gpu_env.sh
out=${OUT:-/tmp/out}
export BASED_CACHE_DIR=$out/cache
mkdir -p "$BASED_CACHE_DIR"
b=./dist/based
$b info | head -1
timeout 100 $b bench --tune --only matmul --filter lm_head 2>&1 | grep -E "^tune|tuning"
timeout 90 $b bench --only step 2>&1 | grep -E "^step|chunked|peak" | head -4
deno=$(ls -d "$HOME"/.cache/based/*/deno | head -1)
rm -rf /tmp/deno_dir && cp -r .device/deno_dir /tmp/deno_dir
DENO_DIR=/tmp/deno_dir timeout 200 "$deno" test -A --cached-only tests/kernels/ tests/optim/ > "$out/gpu_tests.txt" 2>&1
grep -E "FAILED|passed|failed" "$out/gpu_tests.txt" | tail -12
awk '/ERRORS/,0' "$out/gpu_tests.txt" | head -60
