#!/usr/bin/env bash
# Builds and tests keypool the way CI does (.ci/run calls this):
#   1. install missing Debian packages (packaging/install-deps.sh)
#   2. npm dependencies of the SDK test in tests/sdk, when it has a package.json, and of the
#      admin console in ui/ (the builds bundle it; its browser test drives chromium with them)
#   3. CMake + Ninja into build/, then ctest (its summary is what CI reads)
#   4. Meson into builddir/, then meson test: both build files must build and test the
#      same tree.
#   5. fuzz/run.sh: a clang ASan+UBSan build running the whole suite, then the fuzzers.
# Every stage after 1 runs even when an earlier one failed, so one run shows everything;
# the exit status is non-zero if any stage failed. Env: JOBS (default 2).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

jobs=${JOBS:-2}
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# CI must build the console: a failed UI build fails the build instead of leaving /ui/ out.
export KEYPOOL_UI_REQUIRED=1

bash packaging/install-deps.sh --test || exit 1

failed=()
started=$SECONDS
stage() {  # stage NAME COMMAND...: runs it, times it, records a failure
  local name=$1 t0=$SECONDS
  shift
  echo "==> $name"
  if "$@"; then
    echo "==> $name: ok ($((SECONDS - t0))s)"
  else
    echo "==> $name: FAILED ($((SECONDS - t0))s)"
    failed+=("$name")
  fi
}

npm_deps() {
  if [[ -f tests/sdk/package-lock.json || -f tests/sdk/npm-shrinkwrap.json ]]; then
    (cd tests/sdk && npm ci --no-audit --no-fund)
  else
    (cd tests/sdk && npm install --no-audit --no-fund)
  fi
}

deb_package() {
  local rc=0
  KEYPOOL_DEB_BUILD_DIR=build bash tests/packaging/deb_test.sh || rc=$?
  [[ $rc -eq 77 ]] && { echo "deb package test skipped (not root, or keypool already installed here)"; return 0; }
  return "$rc"
}

meson_setup() {
  if [[ -f builddir/build.ninja ]]; then
    # --reconfigure also picks up source files added since (meson.build lists them at setup).
    meson setup --reconfigure builddir
  else
    meson setup builddir
  fi
}

if [[ -f tests/sdk/package.json ]]; then
  stage "npm (tests/sdk)" npm_deps
fi
stage "npm (ui)" bash -c 'cd ui && npm ci --no-audit --no-fund' 

# KEYPOOL_PGO=require: the profile-guided build's training run is also a smoke test of the
# binary; here its failure must fail the build instead of falling back to a plain one.
stage "cmake build" env JOBS="$jobs" KEYPOOL_PGO=require bash packaging/build.sh
if [[ " ${failed[*]} " != *" cmake build "* ]]; then
  stage "ctest" ctest --test-dir build --output-on-failure
  # The .deb from the same (Release) build: installed with dpkg on this machine, run, purged.
  stage "deb package" deb_package
fi

# Both test suites run under Meson too: the integration suite starts the real binary the
# Meson build produced, which is the only check that its link line and defines are right.
stage "meson setup" meson_setup
if [[ " ${failed[*]} " != *" meson setup "* ]]; then
  stage "meson build" meson compile -C builddir -j "$jobs"
  if [[ " ${failed[*]} " != *" meson build "* ]]; then
    stage "meson test" meson test -C builddir --print-errorlogs
  fi
fi

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang), then each
# libFuzzer harness for a few seconds over its seed corpus. Big transfers are smaller here:
# ASan makes each byte dearer and the 1 GiB runs already ran above.
stage "sanitizers + fuzz" env KEYPOOL_BIG_BYTES=268435456 FUZZ_SECONDS="${FUZZ_SECONDS:-8}" JOBS="$jobs" \
  bash fuzz/run.sh build-sanitize

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test.sh: FAILED: ${failed[*]} (total $((SECONDS - started))s)"
  exit 1
fi
echo "test.sh: all passed (total $((SECONDS - started))s)"
