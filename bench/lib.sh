# Shared helpers for the keypool benchmarks. Sourced by getkey.sh, proxy.sh and sse.sh.
# Everything listens on 127.0.0.1 only; every process started here is killed by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
KEYPOOL_BIN=${KEYPOOL_BIN:-/tmp/bench-build/keypool}
KEYPOOL_CONFIG=${KEYPOOL_CONFIG:-$REPO_DIR/config/keypool.yaml}
KP_PORT=${KP_PORT:-9080}
NKEYS=${NKEYS:-20}            # each key allows at most 1,000,000 rpm; spread the load over several
WORK=$(mktemp -d /tmp/keypool-bench.XXXXXX)
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed"; }

ensure_keypool() {
  if [[ ! -x "$KEYPOOL_BIN" ]]; then
    # The shipped build: Release, profile-guided (packaging/build.sh).
    echo "# building keypool into /tmp/bench-build" >&2
    BUILD_DIR=/tmp/bench-build TARGET=keypool bash "$REPO_DIR/packaging/build.sh" >/dev/null
  fi
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
check_ports() { local p; for p in "$@"; do port_free "$p" || die "127.0.0.1:$p is already in use"; done; }

wait_http() {  # wait_http URL : up to 5 s
  local i
  for i in $(seq 50); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
  die "$1 did not come up"
}

# start_keypool UPSTREAM_URL : writes a service file for "openai" pointing at UPSTREAM_URL,
# starts one keypool worker, provisions a tier, NKEYS keys and a team token.
# Sets KP_PID, ADMIN_TOKEN, TEAM_TOKEN.
start_keypool() {
  ensure_keypool
  mkdir -p "$WORK/kp/services"
  printf 'name: openai\nbase_url: %s\nauth_scheme: bearer\nfeature: openai\n' "$1" \
    > "$WORK/kp/services/openai.yaml"
  ADMIN_TOKEN=bench-admin-$(openssl rand -hex 12)
  # SIGPIPE is not ignored for keypool here (unless this shell inherited it ignored, which bash
  # cannot undo): wrk closes its connections while keypool may still be writing, so a keypool
  # that stopped ignoring SIGPIPE itself would die here (see README.md).
  ( cd "$WORK/kp" && trap - PIPE && exec env ENCRYPTION_KEY="$(openssl rand -hex 32)" ADMIN_TOKEN="$ADMIN_TOKEN" \
      SERVER_HOST=127.0.0.1 SERVER_PORT="$KP_PORT" WORKERS=1 DB_PATH="$WORK/kp/pool.db" \
      SERVICES_DIR="$WORK/kp/services" LOG_LEVEL=warn \
      "$KEYPOOL_BIN" --config "$KEYPOOL_CONFIG" serve ) >"$WORK/kp/stdout.log" 2>"$WORK/kp/stderr.log" &
  KP_PID=$!
  PIDS+=("$KP_PID")
  wait_http "http://127.0.0.1:$KP_PORT/health"
  local base="http://127.0.0.1:$KP_PORT" h="Authorization: Bearer $ADMIN_TOKEN" i
  curl -sf -XPOST -H "$h" "$base/admin/tiers" \
    -d '{"name":"pro","features":{"img":1000000,"openai":1000000}}' >/dev/null
  for i in $(seq "$NKEYS"); do
    curl -sf -XPOST -H "$h" "$base/admin/keys" \
      -d "{\"name\":\"k$i\",\"key\":\"sk-bench-$i\",\"tier\":\"pro\",\"service\":\"openai\"}" >/dev/null
  done
  TEAM_TOKEN=$(curl -sf -XPOST -H "$h" "$base/admin/tokens" -d '{"name":"bench","tier":"pro"}' | jq -r .token)
  [[ "$TEAM_TOKEN" == kp_* ]] || die "could not create a team token"
}

# start_nginx NAME CONF : runs nginx in the foreground with its own prefix under $WORK.
# Sets NGX_PID_<NAME>.
start_nginx() {
  local name=$1 conf=$2 pfx="$WORK/nginx-$1"
  mkdir -p "$pfx/logs" "$pfx/tmp"
  nginx -p "$pfx" -c "$conf" -e "$pfx/logs/error.log" -g 'daemon off;' &
  local pid=$!
  PIDS+=("$pid")
  printf -v "NGX_PID_$name" '%s' "$pid"
}

# Fails loudly when keypool is gone (crash) instead of reporting figures of a dead process.
check_keypool_alive() {
  if ! kill -0 "$KP_PID" 2>/dev/null; then
    local rc=0; wait "$KP_PID" || rc=$?
    die "keypool exited during the benchmark (status $rc); stderr: $(tail -c 2000 "$WORK/kp/stderr.log")"
  fi
}

# Memory and CPU of a process and its direct children (an nginx master and its worker).
proc_tree() { echo "$1"; cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }
rss_kb() { local s=0 p v; for p in $(proc_tree "$1"); do v=$(awk '/^VmRSS:/{print $2}' /proc/"$p"/status 2>/dev/null || echo 0); s=$((s + ${v:-0})); done; echo "$s"; }
hwm_kb() { awk '/^VmHWM:/{print $2}' /proc/"$1"/status; }
cpu_ticks() { local s=0 p v; for p in $(proc_tree "$1"); do v=$(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0); s=$((s + v)); done; echo "$s"; }
CLK_TCK=$(getconf CLK_TCK)

# run_wrk TAG PID CONNS SECONDS URL [HEADER] : one bounded wrk run; appends a line
# "TAG rps= p50= p99= mean= non2xx= errs= requests= cpu_ns_per_req= rss_kb=" to $WORK/results
# (CPU of PID and its children over the run; RSS of PID and its children sampled mid-run).
run_wrk() {
  local tag=$1 pid=$2 conns=$3 secs=$4 url=$5 hdr=${6:-} c0 c1 out line
  local args=(-t1 -c"$conns" -d"${secs}s" --latency --timeout 5s -s "$BENCH_DIR/report.lua")
  [[ -n "$hdr" ]] && args+=(-H "$hdr")
  c0=$(cpu_ticks "$pid")
  ( sleep "$(awk -v s="$secs" 'BEGIN{print s/2}')"; rss_kb "$pid" ) > "$WORK/rss.mid" &
  local sampler=$!
  out=$(timeout $((secs + 15)) wrk "${args[@]}" "$url")
  c1=$(cpu_ticks "$pid")
  wait "$sampler" || true
  if [[ -n "${KP_PID:-}" ]]; then check_keypool_alive; fi
  echo "$out" >> "$WORK/wrk.log"
  line=$(grep '^RESULT ' <<<"$out" | sed 's/^RESULT //')
  [[ -n "$line" ]] || die "wrk printed no RESULT line for $tag"
  local reqs=${line##*requests=}
  local cpu_ns=$(( reqs > 0 ? (c1 - c0) * (1000000000 / CLK_TCK) / reqs : 0 ))
  echo "$tag $line cpu_ns_per_req=$cpu_ns rss_kb=$(cat "$WORK/rss.mid")" >> "$WORK/results"
}

machine_note() {
  echo "# $(date -u +%FT%TZ)  $(nproc) CPUs  loadavg $(cut -d' ' -f1-3 /proc/loadavg)  keypool $("$KEYPOOL_BIN" version 2>/dev/null | head -1)"
  local l; l=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$l" 'BEGIN{exit !(l > 1.0)}'; then
    echo "# WARNING: the machine is already busy (loadavg $l): figures are noisy, compare ratios only"
  fi
}
