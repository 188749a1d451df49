#!/usr/bin/env bash
# Configures and builds keypool with CMake + Ninja into build/ (Release, as the .deb is).
# A Release build is profile-guided (see KEYPOOL_PGO in CMakeLists.txt), in two stages in the
# same build dir: an instrumented keypool serves packaging/pgo-train.py's training run on
# loopback, then everything is rebuilt with that profile and link-time optimisation. If the
# training run fails, the build says so and goes on without a profile: a slower binary beats
# no binary.
# Env: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default 2), TARGET
# (default all; `keypool` for the binary alone), KEYPOOL_PGO (default `on` for Release; `off`
# for one plain build, e.g. in an edit-compile loop; `require` makes a failed training run
# fail the build, as CI wants). Script arguments go to CMake, e.g.
# `bash packaging/build.sh -DKEYPOOL_SANITIZE=ON`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
build_type=${BUILD_TYPE:-Release}
jobs=${JOBS:-2}
pgo=${KEYPOOL_PGO:-on}
case "$pgo" in
  on | off | require) ;;
  *) echo "build: KEYPOOL_PGO must be on, off or require (got '$pgo')" >&2; exit 2 ;;
esac
[[ "$build_type" == Release ]] || pgo=off
# Sanitizer and fuzzing builds are for finding bugs, not for speed.
[[ " $* " == *KEYPOOL_SANITIZE=ON* || " $* " == *KEYPOOL_FUZZ=ON* ]] && pgo=off

# A build dir configured earlier with another generator (e.g. Unix Makefiles) makes CMake
# refuse to configure; drop only its cache so Ninja can take over.
cache="$build_dir/CMakeCache.txt"
if [[ -f "$cache" ]] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$cache"; then
  echo "build: $build_dir was configured with another generator; reconfiguring with Ninja"
  rm -rf "$cache" "$build_dir/CMakeFiles"
fi

configure() {  # configure PGO_STAGE [CMAKE_ARGS...]
  local stage=$1
  shift
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DKEYPOOL_PGO="$stage" "$@" >/dev/null
}

# What a profile depends on: keypool's sources and build file, the training run and its
# config, and this build's arguments. When none changed since the last complete
# profile-guided build (a second quick start, an edit to the tests only), its profile and
# objects are still good and stage 1, a full recompile plus the training run, is skipped.
profile_inputs() {
  {
    find src -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum CMakeLists.txt packaging/pgo-train.py config/keypool.yaml
    echo "$build_type $*"
  } | sha256sum | cut -d' ' -f1
}
stamp="$build_dir/keypool-pgo.stamp"

profile_is_current() {  # profile_is_current INPUTS
  [[ -f "$stamp" && "$(cat "$stamp")" == "$1" ]] && grep -qsx 'KEYPOOL_PGO:STRING=use' "$cache"
}

train_profile() {  # train_profile [CMAKE_ARGS...]: stage 1; fails if no usable profile
  echo "build: stage 1 of 2: instrumented keypool for the profile-guided build"
  configure generate "$@" || return 1
  find "$build_dir" -name '*.gcda' -delete  # counts from an older tree would only blur this one's
  cmake --build "$build_dir" --parallel "$jobs" --target keypool || return 1
  # The profile is written when keypool exits; no .gcda means there is nothing to use.
  python3 packaging/pgo-train.py "$build_dir/keypool" config/keypool.yaml &&
    [[ -n "$(find "$build_dir" -name '*.gcda' -print -quit)" ]]
}

stage=off
if [[ "$pgo" != off ]]; then
  inputs=$(profile_inputs "$@")
  if profile_is_current "$inputs"; then
    echo "build: the profile is current (nothing it was trained on changed): stage 1 skipped"
    stage=use
  else
    rm -f "$stamp"
    if train_profile "$@"; then
      echo "build: stage 2 of 2: optimised build with the profile"
      stage=use
    elif [[ "$pgo" == require ]]; then
      echo "build: the PGO training run failed or wrote no profile (see above) and KEYPOOL_PGO=require" >&2
      exit 1
    else
      echo "build: WARNING: the PGO training run failed or wrote no profile (see above); building without a profile" >&2
    fi
  fi
fi
configure "$stage" "$@"
cmake --build "$build_dir" --parallel "$jobs" ${TARGET:+--target "$TARGET"}
if [[ "$stage" == use ]]; then
  echo "$inputs" >"$stamp"
fi
