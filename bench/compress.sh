#!/usr/bin/env bash
# Issue 16's measurement: identity vs decoding compressed answers (bench/compress_bench.cpp).
# Builds the bench with -O2 against keypool's own src/codec (the decoder the proxy runs) in a
# scratch directory and prints the two tables README.md quotes. About 1 minute; no network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/keypool-compress-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
g++ -std=c++20 -O2 -DNDEBUG -I"$root/src" "$root/bench/compress_bench.cpp" "$root"/src/codec/*.cpp \
  "$root/src/base/strings.cpp" -o "$work/compress_bench" $(pkg-config --libs zlib libbrotlidec libbrotlienc libcrypto)
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $load (timings move with other load; sizes do not)"
echo
"$work/compress_bench"
