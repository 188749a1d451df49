#!/usr/bin/env bash
# Installs what keypool needs to build and test on Debian 12, and nothing that is already
# there. Idempotent: a second run checks each package with dpkg and does no apt work at all.
# Runs `apt-get update` once, and only when something must be installed. Uses sudo when
# not root. Quiet: apt's chatter goes to a log that is printed only if apt fails.
set -euo pipefail

# Build: compiler, both build systems, pkg-config. Libraries: see CMakeLists.txt / meson.build
# (node-llhttp ships llhttp's C sources in /usr/share/llhttp). Tools: openssl (quickstart
# secrets), curl (the README walk-through), python3 (packaging/pgo-train.py, the training
# run of the profile-guided Release build).
packages=(
  build-essential cmake ninja-build meson pkg-config
  libuv1-dev node-llhttp libssl-dev libyaml-cpp-dev libsqlite3-dev
  doctest-dev nlohmann-json3-dev libjemalloc-dev zlib1g-dev libbrotli-dev
  openssl curl ca-certificates python3
)

# --test: what only the test command needs: clang-14 with its sanitizer and libFuzzer
# runtimes for fuzz/run.sh (the ASan+UBSan build of the whole suite), Debian's chromium
# for the admin console's browser test (ui/test; playwright-core drives /usr/bin/chromium),
# and redis-server, which the Redis tests start on a free loopback port (they fail without it).
if [[ "${1:-}" == "--test" ]]; then
  packages+=(clang-14 libclang-rt-14-dev chromium redis-server)
fi

# Node.js: the build bundles the admin console (ui/, npm packages from ui/package-lock.json)
# and tests/sdk runs on it. Debian's nodejs + npm only when there is no `node` at all (a
# NodeSource or nvm install is left alone: Debian's npm would conflict with it).
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
log=$(mktemp "${TMPDIR:-/tmp}/keypool-apt.XXXXXX")
trap 'rm -f "$log"' EXIT
apt() {
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" \
      >"$log" 2>&1 </dev/null; then
    echo "install-deps: apt-get $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}
apt update
apt install -y --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
  if ! installed "$p"; then
    echo "install-deps: $p is still not installed" >&2
    exit 1
  fi
done
echo "install-deps: done"
