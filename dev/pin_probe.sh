#!/usr/bin/env bash
# GPU pinning probe (dev/README.md): which way of steering a process to a
# GPU works with Deno's WebGPU, which always takes the first adapter?
#
# Once, here (a Debian machine with mesa-vulkan-drivers installed):
#   bash dev/pin_probe.sh --pack
# fills .device/ (dev/device_pack.sh: Deno, the Vulkan loader, the npm cache)
# and .device/pin/lib/ (Mesa's device-select layer and the libraries it needs).
#
# On the machine with 2 GPUs, from the repository root, one command:
#   bash .device/on-gpu.sh bash dev/pin_probe.sh
# (or, where deno and a Vulkan loader are installed: bash dev/pin_probe.sh).
# Prints the report and writes pin_report.md and pin_raw.log into $OUT (or
# ./pin-probe). Extra arguments go to dev/pin_probe.ts (--only, --seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then
  bash dev/device_pack.sh main.ts dev/pin_probe.ts dev/pin_probe_worker.ts
  layer=$(ldconfig -p | awk '/libVkLayer_MESA_device_select\.so /{print $NF; exit}')
  if [ -z "$layer" ]; then
    echo "no Mesa device-select layer here: apt-get install -y mesa-vulkan-drivers, then again" >&2
    exit 1
  fi
  rm -rf .device/pin && mkdir -p .device/pin/lib
  cp -L "$layer" .device/pin/lib/
  # its libraries, but not the C library's own (the GPU machine has those)
  ldd "$layer" | awk '/=> \//{print $3}' |
    grep -vE '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+)\.so|/ld-linux' |
    while read -r lib; do cp -L "$lib" .device/pin/lib/; done
  du -sh .device/pin | awk '{print "packed .device/pin: " $1}'
  exit 0
fi

if ! command -v deno >/dev/null; then
  echo "no deno on PATH: run 'bash .device/on-gpu.sh bash dev/pin_probe.sh' (after --pack here)" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null || echo "warning: no nvidia-smi: GPUs cannot be told apart" >&2
exec deno run --cached-only -A dev/pin_probe.ts "$@"
