#!/usr/bin/env bash
# Lab (issue 11): PyTorch anchors of the Based-360m training step on the GPU machine, from the
# repository root there, with a python3 that has torch. First dev/torch_based.py's check against
# the reference fixtures (float64 on the CPU, then float32 on the GPU with TF32 off: the timed
# code path); only when both pass, the step timing (fp32, TF32, bf16 autocast). Under ~2 minutes.
#
#   OUT=DIR [FIXTURES=.shared/fixtures] [TORCH_CONFIGS=DIR] bash dev/gpu_torch_step.sh
#
# The configs come from dev/torch_config.ts when deno is there, else from TORCH_CONFIGS (a folder
# with fixture.json and based-360m.json written beforehand by dev/torch_config.ts).
# Results in $OUT: check.txt, check.json, step.txt and torch-step.json, which
# `based bench --only step --anchors $OUT/torch-step.json` (comma-separated with the matmul
# anchors of dev/torch_matmul.py, if any) prints beside our figures.
set -uo pipefail
out=${OUT:?set OUT to the output folder}
fixtures=${FIXTURES:-.shared/fixtures}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
if command -v deno >/dev/null; then
  deno run -A --cached-only dev/torch_config.ts --manifest "$fixtures/manifest.json" >"$out/fixture.json" || exit 1
  deno run -A --cached-only dev/torch_config.ts experiment=example/based-360m >"$out/based-360m.json" || exit 1
else
  cfgs=${TORCH_CONFIGS:?no deno here: set TORCH_CONFIGS to a folder with fixture.json and based-360m.json}
  cp "$cfgs/fixture.json" "$cfgs/based-360m.json" "$out/" || exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || exit 1

echo "== check: float64 on the CPU, float32 on the GPU (TF32 off)"
timeout 120 python3 dev/torch_based.py check "$out/fixture.json" "$fixtures" --device cpu \
  --dtype float64 2>&1 | tee "$out/check.txt" | tail -2
ok64=${PIPESTATUS[0]}
timeout 120 python3 dev/torch_based.py check "$out/fixture.json" "$fixtures" --device cuda \
  --dtype float32 --out "$out/check.json" 2>&1 | tee -a "$out/check.txt" | grep -v '^ok  '
ok32=${PIPESTATUS[0]}
if [ "$ok64" != 0 ] || [ "$ok32" != 0 ]; then
  echo "error: the PyTorch model does not match the fixtures ($out/check.txt); no timings"
  exit 1
fi

echo "== step: ${STEPS:-10} timed steps after ${WARMUP:-3} per mode"
timeout 300 python3 dev/torch_based.py time "$out/based-360m.json" --out "$out/torch-step.json" \
  --steps "${STEPS:-10}" --warmup "${WARMUP:-3}" 2>&1 | tee "$out/step.txt"
