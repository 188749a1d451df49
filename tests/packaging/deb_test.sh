#!/usr/bin/env bash
# Builds the keypool .deb with CPack in a temporary build dir, installs it with dpkg on THIS
# machine, checks what it installed, runs the installed binary (check-config, then serve as
# the keypool user: /health, the admin API, SIGHUP, SIGTERM -> exit 0), and purges it.
#
# Needs root (dpkg) and the build dependencies (packaging/install-deps.sh). Exits 0 on
# success, 77 when it cannot run here (not root, no dpkg, keypool already installed), and
# 1 on any failure. Every step is bounded by `timeout`.
#
# Env: KEYPOOL_SOURCE_DIR (default: this repo), KEYPOOL_DEB_BUILD_DIR (reuse this build dir
# instead of a fresh one in a temp dir; it is configured Release and only `keypool` is
# built), JOBS (default 2), KEEP_TMP=1 keeps the temp dir for inspection.
# Registered with ctest as `deb_package` when configured with -DKEYPOOL_DEB_TEST=ON.
set -euo pipefail

src=${KEYPOOL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
jobs=${JOBS:-2}
conf=/etc/keypool/keypool.yaml
started=$SECONDS

say() { echo "deb_test: $*"; }
fail() {
  echo "deb_test: FAIL: $*" >&2
  exit 1
}
skip() {
  echo "deb_test: SKIP: $*"
  exit 77
}

[[ $(id -u) -eq 0 ]] || skip "needs root (dpkg -i / --purge)"
for tool in dpkg dpkg-deb cmake cpack ninja curl setpriv timeout getent; do
  command -v "$tool" >/dev/null || skip "$tool not found"
done
if dpkg-query -W -f='${db:Status-Status}' keypool 2>/dev/null | grep -qv '^not-installed$'; then
  skip "a keypool package is already on this machine; not touching it"
fi
getent passwd keypool >/dev/null && skip "a keypool user already exists; not touching it"
[[ -e /var/lib/keypool || -e /etc/keypool ]] && skip "/var/lib/keypool or /etc/keypool already exists"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keypool-deb-test.XXXXXX")
installed=0
server_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ $installed -eq 1 ]]; then
    timeout 120 dpkg --purge keypool >/dev/null 2>&1 || echo "deb_test: cleanup: dpkg --purge keypool failed" >&2
  fi
  if [[ $rc -ne 0 && -f "$tmp/serve.log" ]]; then
    echo "deb_test: keypool output:" >&2
    tail -n 30 "$tmp/serve.log" >&2
  fi
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    echo "deb_test: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "deb_test: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 1' INT TERM

# --- build the package -----------------------------------------------------------------
build=${KEYPOOL_DEB_BUILD_DIR:-$tmp/build}
say "building keypool (Release) in $build"
# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack's install step must not build the test binaries.
timeout 300 cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKEYPOOL_SANITIZE=OFF -DKEYPOOL_FUZZ=OFF -DKEYPOOL_INSTALL_SYSTEM_FILES=ON \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >"$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log" >&2; fail "cmake configure"; }
timeout 1500 cmake --build "$build" --target keypool --parallel "$jobs" >"$tmp/build.log" 2>&1 ||
  { tail -n 40 "$tmp/build.log" >&2; fail "build"; }
say "cpack -G DEB ($((SECONDS - started)) s so far)"
timeout 300 cpack --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log" >&2; fail "cpack"; }
shopt -s nullglob
debs=("$tmp"/pkg/keypool_*.deb)
shopt -u nullglob
[[ ${#debs[@]} -eq 1 ]] || fail "expected one keypool_*.deb in $tmp/pkg, found ${#debs[@]}"
deb=${debs[0]}
say "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

# --- the package's metadata and contents -------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == keypool ]] || fail "Package is '$(field Package)'"
depends=$(field Depends)
say "Depends: $depends"
for lib in libuv1 libssl3 libyaml-cpp0.7 libsqlite3-0 passwd; do
  grep -Eq "(^|[ ,])$lib([ ,(]|$)" <<<"$depends" || fail "Depends lacks $lib"
done
dpkg-deb -c "$deb" | awk '{print $1, $6}' >"$tmp/contents"
expect_file() { # mode-prefix path
  grep -Eq "^$1 \./${2#/}$" "$tmp/contents" || fail "package lacks $2 with mode $1"
}
expect_file '-rwxr-xr-x' /usr/bin/keypool
expect_file '-rw-r--r--' /etc/keypool/keypool.yaml
expect_file '-rw-r--r--' /etc/keypool/keypool.env.example
expect_file '-rw-r--r--' /lib/systemd/system/keypool.service
for f in "$src"/services.d/*.yaml; do
  expect_file '-rw-r--r--' "/etc/keypool/services.d/$(basename "$f")"
done
grep -q '\./etc/keypool/keypool\.env$' "$tmp/contents" && fail "the package ships keypool.env (secrets)"
dpkg-deb -e "$deb" "$tmp/control"
for s in postinst prerm postrm; do
  [[ -x "$tmp/control/$s" ]] || fail "control.tar lacks an executable $s"
done
conffiles=$(sort "$tmp/control/conffiles")
expected=$(grep -E '^-[^ ]* \./etc/' "$tmp/contents" | sed 's/^[^ ]* \.//' | sort)
[[ "$conffiles" == "$expected" ]] || fail "conffiles != files under /etc:"$'\n'"$conffiles"$'\n'"vs"$'\n'"$expected"

# --- install -----------------------------------------------------------------------------
say "dpkg -i"
installed=1
timeout 120 dpkg -i "$deb" >"$tmp/dpkg-i.log" 2>&1 || { cat "$tmp/dpkg-i.log" >&2; fail "dpkg -i"; }
[[ $(dpkg-query -W -f='${db:Status-Status}' keypool) == installed ]] || fail "keypool is not 'installed'"
getent passwd keypool >/dev/null || fail "postinst did not create the keypool user"
[[ $(getent passwd keypool | cut -d: -f7) == /usr/sbin/nologin ]] || fail "keypool has a login shell"
[[ $(stat -c '%a %U %G' /var/lib/keypool) == "700 keypool keypool" ]] ||
  fail "/var/lib/keypool is $(stat -c '%a %U %G' /var/lib/keypool), want 700 keypool keypool"
[[ -e /etc/keypool/keypool.env ]] && fail "dpkg -i created /etc/keypool/keypool.env"
if command -v systemd-analyze >/dev/null; then
  # Offline check of the unit's syntax and directives (systemd need not be running).
  timeout 60 systemd-analyze verify /lib/systemd/system/keypool.service >"$tmp/verify.log" 2>&1 ||
    { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify keypool.service"; }
  if [[ -s "$tmp/verify.log" ]]; then
    cat "$tmp/verify.log" >&2
    fail "systemd-analyze verify warned"
  fi
fi
unit=/lib/systemd/system/keypool.service
# shellcheck disable=SC2016 # $MAINPID is literal
for d in 'User=keypool' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' \
  'PrivateTmp=yes' 'ReadWritePaths=/var/lib/keypool' 'StateDirectory=keypool' 'CapabilityBoundingSet=' \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'EnvironmentFile=/etc/keypool/keypool.env' \
  'ExecReload=/bin/kill -HUP $MAINPID' 'LimitCORE=0'; do
  grep -qxF "$d" "$unit" || fail "$unit lacks '$d'"
done

# --- run the installed binary --------------------------------------------------------------
export ENCRYPTION_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
export ADMIN_TOKEN=kp_admin_deb_test_0123456789abcdef
[[ $(timeout 10 /usr/bin/keypool version) == keypool\ * ]] || fail "keypool version"
out=$(timeout 30 /usr/bin/keypool --config "$conf" check-config 2>&1) || fail "check-config: $out"
say "$out"
n_services=$(find "$src/services.d" -maxdepth 1 -name '*.yaml' | wc -l)
[[ "$out" == *"$n_services services from /etc/keypool/services.d"* ]] || fail "check-config: unexpected '$out'"
# check-config must fail (exit 2) without the secrets.
rc=0
env -u ENCRYPTION_KEY timeout 30 /usr/bin/keypool --config "$conf" check-config >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "check-config without ENCRYPTION_KEY exited $rc, want 2"

db=/var/lib/keypool/deb_test.db
say "serve as user keypool (port picked by the kernel, DB_PATH=$db)"
# setpriv execs keypool directly (no intermediate process), so $! is keypool's pid and the
# SIGTERM below reaches it. Port 0: the kernel picks a free loopback port; read it from the log.
SERVER_HOST=127.0.0.1 SERVER_PORT=0 DB_PATH=$db LOG_FORMAT=json \
  setpriv --reuid=keypool --regid=keypool --init-groups --no-new-privs --inh-caps=-all \
  /usr/bin/keypool --config "$conf" serve >"$tmp/serve.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*"msg":"listening".*"port":\([0-9]*\).*/\1/p' "$tmp/serve.log" | head -n 1)
  [[ -n "$port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "keypool exited before listening"
  sleep 0.1
done
[[ -n "$port" ]] || fail "keypool did not log 'listening' within 10 s"
url=http://127.0.0.1:$port
say "listening on $url"

user=$(ps -o user= -p "$server_pid" | tr -d ' ')
[[ "$user" == keypool ]] || fail "keypool runs as '$user', want keypool"

curl_() { timeout 15 curl -sS --max-time 10 "$@"; }
code=$(curl_ -o "$tmp/health" -w '%{http_code}' "$url/health") || fail "GET /health"
[[ "$code" == 200 ]] || fail "GET /health: $code $(cat "$tmp/health")"
code=$(curl_ -o /dev/null -w '%{http_code}' "$url/admin/tiers") || fail "GET /admin/tiers (no token)"
[[ "$code" == 401 ]] || fail "GET /admin/tiers without a token: $code, want 401"
auth="Authorization: Bearer $ADMIN_TOKEN"
code=$(curl_ -o "$tmp/tier" -w '%{http_code}' -H "$auth" -d '{"name":"debtest","features":{"openai":60}}' \
  "$url/admin/tiers") || fail "POST /admin/tiers"
[[ "$code" == 201 ]] || fail "POST /admin/tiers: $code $(cat "$tmp/tier")"
code=$(curl_ -o "$tmp/tiers" -w '%{http_code}' -H "$auth" "$url/admin/tiers") || fail "GET /admin/tiers"
if [[ "$code" != 200 ]] || ! grep -q '"debtest"' "$tmp/tiers"; then
  fail "GET /admin/tiers: $code $(cat "$tmp/tiers")"
fi
code=$(curl_ -o "$tmp/services" -w '%{http_code}' -H "$auth" "$url/admin/services") || fail "GET /admin/services"
if [[ "$code" != 200 ]] || ! grep -q '/etc/keypool/services.d/openai.yaml' "$tmp/services"; then
  fail "GET /admin/services: $code (services.d not from /etc/keypool?)"
fi
[[ $(stat -c '%U' "$db") == keypool ]] || fail "$db is not owned by keypool"

# ExecReload: SIGHUP reloads and keeps serving.
kill -HUP "$server_pid"
sleep 0.5
code=$(curl_ -o /dev/null -w '%{http_code}' "$url/health") || fail "GET /health after SIGHUP"
[[ "$code" == 200 ]] || fail "GET /health after SIGHUP: $code"

say "SIGTERM"
kill -TERM "$server_pid"
for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "keypool still running 30 s after SIGTERM"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
[[ $rc -eq 0 ]] || fail "keypool exited $rc after SIGTERM, want 0"
grep -q '"msg":"stopped"' "$tmp/serve.log" || fail "keypool did not log 'stopped'"

# --- purge ---------------------------------------------------------------------------------
say "dpkg --purge"
timeout 120 dpkg --purge keypool >"$tmp/dpkg-purge.log" 2>&1 || { cat "$tmp/dpkg-purge.log" >&2; fail "dpkg --purge"; }
installed=0
[[ ! -e /usr/bin/keypool ]] || fail "/usr/bin/keypool left after purge"
[[ ! -e /etc/keypool ]] || fail "/etc/keypool left after purge"
[[ ! -e /var/lib/keypool ]] || fail "/var/lib/keypool left after purge"
[[ ! -e /lib/systemd/system/keypool.service ]] || fail "unit left after purge"
getent passwd keypool >/dev/null && fail "user keypool left after purge"
getent group keypool >/dev/null && fail "group keypool left after purge"
say "ok ($((SECONDS - started)) s)"
