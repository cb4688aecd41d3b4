#!/usr/bin/env bash
# deno task pack: one self-contained executable for Linux x86-64, dist/based.
# It is a small shell stub followed by a gzip-compressed tar holding the Deno
# runtime (the npm package's binary) and a `deno bundle` of the program (all
# kernels, configs, the tokenizer and the bundled corpus inside). On first
# run it unpacks into ${XDG_CACHE_HOME:-~/.cache}/based/<hash>/ and runs from
# there: no network, no files beside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-dist/based}
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

deno_bin=${DENO_BIN:-}
if [ -z "$deno_bin" ]; then
  deno_bin=$(command -v deno || true)
fi
if [ -z "$deno_bin" ] || ! "$deno_bin" --version | grep -q '^deno 2\.9\.6'; then
  deno_bin=$(npx -y deno@2.9.6 eval 'console.log(Deno.execPath())')
fi
[ "$(uname -m)" = "x86_64" ] || echo "warning: packing on $(uname -m); the runtime inside is this machine's" >&2

mkdir -p "$work/payload"
"$deno_bin" bundle --quiet -o "$work/payload/based.js" main.ts
cp "$deno_bin" "$work/payload/deno"
chmod +x "$work/payload/deno"
(cd "$work/payload" && tar -cf - deno based.js) | gzip -6 > "$work/payload.tar.gz"
hash=$(sha256sum "$work/payload.tar.gz" | cut -c1-16)

cat > "$out" <<STUB
#!/bin/sh
# based: a self-contained build (Deno runtime + bundled program). See README.
set -e
dir="\${BASED_HOME:-\${XDG_CACHE_HOME:-\$HOME/.cache}/based}/$hash"
if [ ! -x "\$dir/deno" ] || [ ! -f "\$dir/based.js" ]; then
  mkdir -p "\$dir.tmp.\$\$"
  tail -c +@@OFFSET@@ "\$0" | gzip -dc | tar -xf - -C "\$dir.tmp.\$\$"
  mkdir -p "\$(dirname "\$dir")"
  # an incomplete copy (a first run that was killed) is replaced; a complete one
  # unpacked meanwhile by another process is kept
  if [ -d "\$dir" ] && { [ ! -x "\$dir/deno" ] || [ ! -f "\$dir/based.js" ]; }; then rm -rf "\$dir"; fi
  mv -T "\$dir.tmp.\$\$" "\$dir" 2>/dev/null || rm -rf "\$dir.tmp.\$\$"
fi
DENO_DIR="\$dir/deno_dir" DENO_NO_UPDATE_CHECK=1 exec "\$dir/deno" run -A --no-config --cached-only "\$dir/based.js" "\$@"
__PAYLOAD__
STUB
# the payload starts right after the stub: patch its byte offset in (fixed width)
size=$(wc -c < "$out")
off=$(printf '%010d' $((size + 1)))
sed -i "s/@@OFFSET@@/$off/" "$out"
[ "$(wc -c < "$out")" -eq "$((size))" ] || { echo "pack: stub size changed" >&2; exit 1; }
cat "$work/payload.tar.gz" >> "$out"
chmod +x "$out"
ls -la "$out" | awk '{print "packed " $NF ": " $5 " bytes"}'
