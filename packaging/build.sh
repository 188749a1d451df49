#!/usr/bin/env bash
# Configures and builds keypool with CMake + Ninja into build/ (Release, as the .deb is).
# Env: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default 2),
# extra CMake arguments as script arguments, e.g. `bash packaging/build.sh -DKEYPOOL_SANITIZE=ON`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
build_type=${BUILD_TYPE:-Release}
jobs=${JOBS:-2}

# A build dir configured earlier with another generator (e.g. Unix Makefiles) makes CMake
# refuse to configure; drop only its cache so Ninja can take over.
cache="$build_dir/CMakeCache.txt"
if [[ -f "$cache" ]] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$cache"; then
  echo "build: $build_dir was configured with another generator; reconfiguring with Ninja"
  rm -rf "$cache" "$build_dir/CMakeFiles"
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" "$@" >/dev/null
cmake --build "$build_dir" --parallel "$jobs"
