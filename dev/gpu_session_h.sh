#!/usr/bin/env bash
# Lab: session H of issue 11 (through .device/on-gpu.sh), one call of at most 10 minutes.
#   the WGSL FMA peaks and the copy bandwidth (the limits of the kernel classes), the GEMM probe
#   (dev/gemm_probe.ts: as is, the inner loop alone, A's fragments through subgroup shuffles),
#   then the chunked step in both precisions with the per-class profile against those limits.
set -uo pipefail
export NO_COLOR=1 BASED_CACHE_DIR=/tmp/based-cache
o=${OUT:-/tmp/out}
mkdir -p "$o"
d() { deno run -A --cached-only main.ts "$@"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$o/gpu.txt"
anchors=bench/results/h200-2026-12-03-torch-matmul.json,bench/results/h200-2026-12-04-torch-step.json
d bench --only copy,peak --out "$o/peak" 2>&1 | tee "$o/peak.log"
for m in asis inner shufA; do
  MODE=$m timeout 100 deno run -A --cached-only dev/gemm_probe.ts 2>&1 | grep -v '^$' | tee -a "$o/gemm-probe.log"
done
for p in 16-mixed 32; do
  timeout 120 bash -c "$(declare -f d); d bench --only step --filter chunked --profile --precision $p --anchors $anchors --out $o/step-$p" 2>&1 | tee "$o/step-$p.log"
done
ls -R "$o" | head -40
