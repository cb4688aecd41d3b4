#!/usr/bin/env bash
# Fills .device/ for GPU-machine runs (see the shared device scripts), then
# prunes the npm cache to what the program imports: the GPT-2 tokenizer
# package alone is ~30 MB, and the carried tree may be 64 MiB at most.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
bash ../shared/device/pack.sh "${@:-main.ts}"
# The NVIDIA Vulkan ICD (libGLX_nvidia) needs libglvnd's dispatch libraries,
# which the shared pack script does not bring: without them the loader finds
# "no drivers" there.
if ! ls .device/gl/libglvnd0_*.deb >/dev/null 2>&1; then
  lists=/tmp/amd64-lists; mkdir -p "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update -qq >/dev/null
  (cd .device/gl && apt-get "${o[@]}" download -qq libglvnd0 libglx0 libegl1 libopengl0 libgl1 libgles2 2>/dev/null)
fi
tok=.device/deno_dir/npm/registry.npmjs.org/gpt-tokenizer
for d in "$tok"/*/; do
  rm -rf "$d/cjs" "$d/src" "$d/data"
  find "$d/esm/bpeRanks" -type f ! -name 'r50k_base*' -delete 2>/dev/null || true
  find "$d/esm" -name '*.map' -delete 2>/dev/null || true
done
# transpiled-code and analysis caches are rebuilt there on first use
rm -rf .device/deno_dir/gen .device/deno_dir/*_cache_v2*
du -sh .device | awk '{print "pruned .device: " $1}'
