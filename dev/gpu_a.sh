#!/usr/bin/env bash
# GPU-machine session A: adapter, parity on the fixtures, kernel benchmarks.
# Run from the project root through .device/on-gpu.sh (dev/device_pack.sh).
set -uo pipefail
export DENO_WEBGPU_BACKEND=vulkan
out=${OUT:-/tmp/out}
run() { deno run -A --cached-only main.ts "$@"; }
run info | head -4
echo "== parity"
BASED_SHARED_DIR=$PWD/.shared timeout 300 deno run -A --cached-only main.ts parity .shared/fixtures 2>&1 | tee "$out/parity.txt"
echo "== bench"
timeout 400 deno run -A --cached-only main.ts bench --only copy,matmul,attention,optim --out "$out" 2>&1 | tee "$out/bench_a.txt"
