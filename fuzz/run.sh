#!/usr/bin/env bash
# fuzz/run.sh [BUILD_DIR]
#
# One Clang build with libFuzzer + ASan + UBSan that builds the fuzz harnesses and the whole
# test suite, runs ctest, then runs each fuzzer for FUZZ_SECONDS (default 10) over a
# temporary copy of its seed corpus (fuzz/corpus/<target>/ is never written to).
# Exits non-zero if a test fails or a fuzzer finds a crash, leak, timeout or failed check;
# crashing inputs are kept in BUILD_DIR/fuzz-artifacts/.
#
# BUILD_DIR defaults to ${TMPDIR:-/tmp}/keypool-fuzz-build and is reused between runs.
# Environment: FUZZ_SECONDS (per fuzzer), JOBS (build parallelism, default nproc).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-${TMPDIR:-/tmp}/keypool-fuzz-build}
seconds=${FUZZ_SECONDS:-10}
jobs=${JOBS:-$(nproc)}
targets=(request response service_yaml admin_json usage)

if [[ "$(realpath -m "$build")" == "$src/build" ]]; then
  echo "run.sh: refusing to use $src/build (the g++ build); pass another directory" >&2
  exit 2
fi

# A small quarantine: ASan's default (256 MB of freed memory held back) would hide the
# flat RSS that the big-transfer tests assert.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:quarantine_size_mb=4:thread_local_quarantine_size_kb=64}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }

step "configure $build"
# Line tables only, not full debug info: enough for symbolized sanitizer reports (file and
# line per frame). With full -g this stage took 578 s in CI here; with line tables, 503 s.
CC=clang-14 CXX=clang++-14 cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
  -DKEYPOOL_FUZZ=ON -DKEYPOOL_SANITIZE=ON >/dev/null

failed=()

step "build the fuzzers"
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}"

# A test that does not build under Clang is a failure too, but the fuzzers still run.
step "build the tests"
if cmake --build "$build" -j "$jobs" --target keypool unit_tests integration_tests; then
  step "ctest"
  if ! ctest --test-dir "$build" --output-on-failure -j 2; then
    failed+=("ctest")
  fi
else
  failed+=("test build")
fi

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/keypool-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

for t in "${targets[@]}"; do
  step "fuzz_$t for ${seconds}s"
  mkdir -p "$work/$t"
  cp "$src/fuzz/corpus/$t/." "$work/$t/" -r
  # The outer timeout is a backstop: libFuzzer's own out-of-memory report can take very long.
  if ! timeout -s KILL $((seconds + 120)) "$build/fuzz_$t" "$work/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/$t-" -print_final_stats=1 >"$work/$t.log" 2>&1; then
    failed+=("fuzz_$t")
    # The report: the check or sanitizer message, the stack, the input.
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse|INITED|RELOAD)|NEW_FUNC' "$work/$t.log" | tail -n 60 >&2
  else
    grep -E '^stat::number_of_executed_units|^Done' "$work/$t.log" || true
  fi
done

step "done"
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]} (inputs, if any, in $artifacts)" >&2
  exit 1
fi
echo "all tests passed; no fuzzer found a problem"
