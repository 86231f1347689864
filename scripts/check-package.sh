#!/usr/bin/env bash
# The packaged install, as a user gets it (issue 17): `npm pack` the package (with the prebuilt addon of
# `npm run build:prebuilds`), install the tarball into an empty folder with no compiler on PATH (PATH holds
# only node, npm, npx and sh), and run `npx adainfer generate` with the shipped exit file. Then the fallback:
# the same install forced to build from source must say that it compiles (and, with no compiler, fail).
# Prints the install and first-generate times. Needs the npm registry (or a warm npm cache) for the dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
prebuilt=(prebuilds/linux-x64/*.node)
if [ ${#prebuilt[@]} -eq 0 ]; then echo "no prebuilds/linux-x64/*.node: run 'npm run build:prebuilds' first" >&2; exit 1; fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tarball="$WORK/$(npm pack --silent --pack-destination "$WORK" | tail -n 1)"
listing=$(tar -tzf "$tarball")
for want in package/prebuilds/linux-x64/ package/scripts/install.js package/dist/lib/cli/main.js package/models/adainfer-tinystories-10L-ee.exit.json package/LICENSE; do
  grep -q "^$want" <<<"$listing" || { echo "the package lacks $want" >&2; exit 1; }
done
if grep -q '^package/dist/test/' <<<"$listing"; then echo "the package carries dist/test" >&2; exit 1; fi
echo "packed $(basename "$tarball"): $(du -h "$tarball" | cut -f1), $(wc -l <<<"$listing") files"

# A PATH with no compiler: node, npm, npx and sh only.
mkdir "$WORK/bin"
for tool in node npm npx sh; do ln -s "$(command -v "$tool")" "$WORK/bin/$tool"; done
for tool in cc gcc g++ c++ clang make python3; do
  if PATH="$WORK/bin" command -v "$tool" >/dev/null 2>&1; then echo "$tool is on the stripped PATH" >&2; exit 1; fi
done

mkdir "$WORK/app"
cd "$WORK/app"
echo '{ "name": "adainfer-package-check", "version": "1.0.0", "private": true }' >package.json
t0=$(date +%s.%N)
PATH="$WORK/bin" npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; exit 1; }
t1=$(date +%s.%N)
grep -q 'adainfer: using the prebuilt addon prebuilds/linux-x64/' "$WORK/install.log" || { cat "$WORK/install.log"; echo "the install did not use the prebuilt addon" >&2; exit 1; }
test ! -e node_modules/adainfer/build || { echo "the install compiled the addon (node_modules/adainfer/build exists)" >&2; exit 1; }
test ! -e node_modules/vega || { echo "vega was installed for a user (it is an optional peer)" >&2; exit 1; }

PATH="$WORK/bin" npx adainfer generate -p 'Once upon a time' -n 16 --temp 0 --threads 1 --exit auto --json >"$WORK/generate.json"
t2=$(date +%s.%N)
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.tokens.length !== 16) throw new Error(`expected 16 tokens, got ${r.tokens.length}`);
  if (r.exit.source !== "auto" || !r.exit.file.endsWith("adainfer-tinystories-10L-ee.exit.json")) throw new Error(`exit: ${JSON.stringify(r.exit)}`);
  console.log(`generate: ${JSON.stringify(r.text)} (kernels ${r.model.kernels}, mean layers ${r.exit.meanLayers.toFixed(2)})`);
' "$WORK/generate.json"
echo "install from the tarball: $(node -e "console.log((process.argv[2]-process.argv[1]).toFixed(1))" "$t0" "$t1") s; first generate (npx, 16 tokens): $(node -e "console.log((process.argv[2]-process.argv[1]).toFixed(1))" "$t1" "$t2") s"

# No prebuild fits (forced here): the install says it compiles from source; with no compiler it fails.
rm -rf node_modules package-lock.json
if ADAINFER_BUILD_FROM_SOURCE=1 PATH="$WORK/bin" npm install --no-audit --no-fund --foreground-scripts "$tarball" >"$WORK/source.log" 2>&1; then
  echo "a build from source succeeded with no compiler on PATH" >&2; exit 1
fi
grep -q 'adainfer: a build from source was asked for; compiling the addon from source with node-gyp' "$WORK/source.log" || { cat "$WORK/source.log"; echo "the fallback did not say it compiles" >&2; exit 1; }
echo "package check passed"
