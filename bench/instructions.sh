#!/usr/bin/env bash
# User-space instructions per proxied request, keypool vs nginx doing the same rewrite, counted
# by valgrind's callgrind. Timings on this shared 2-core machine move by 30% from one minute to
# the next; instruction counts do not, so this is the figure to compare builds with. It covers
# user space only (keypool's code, libc, jemalloc, OpenSSL, libuv): the kernel's share of a
# proxied request (two reads, two writes on loopback) is the same for both and not counted.
#
# Each proxy runs under callgrind with instrumentation off while it starts and warms up; it is
# switched on for one wrk run at 4 connections (the count of requests comes from wrk), then
# off, and the totals are dumped. valgrind slows the proxy ~50x, so the request counts are small.
# Usage: bench/instructions.sh      env: DURATION=6 KP_PORT=9080 NKEYS=20 KEYPOOL_BIN=...
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-6}
need wrk; need nginx; need curl; need jq; need valgrind; need callgrind_control; need callgrind_annotate
check_ports 9001 9002 "$KP_PORT"
echo "# $(date -u +%FT%TZ)  keypool $("${KEYPOOL_BIN}" version 2>/dev/null | head -1)  (counts do not depend on the machine's load)"

start_nginx up "$BENCH_DIR/nginx-upstream.conf"
wait_http http://127.0.0.1:9001/

# counted NAME PID URL HEADER : instructions per request of the callgrind-run process PID.
counted() {
  local name=$1 pid=$2 url=$3 hdr=$4 out=$WORK/callgrind.$1 n ir
  timeout 30 wrk -t1 -c4 -d2s -H "$hdr" "$url" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  n=$(timeout $((DURATION + 20)) wrk -t1 -c4 -d"${DURATION}s" -H "$hdr" "$url" | awk '/requests in/{print $1}')
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  ir=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
  [[ -n "$n" && "$n" -gt 0 && -n "$ir" && "$ir" != "." ]] || die "no count for $name"
  echo "$name $n $ir" >> "$WORK/counts"
  printf '%-8s %8d requests  %14d instructions  %7d per request\n' "$name" "$n" "$ir" $((ir / n))
}

# keypool under callgrind: a wrapper binary, so lib.sh starts and provisions it as usual.
ensure_keypool
cat > "$WORK/keypool-callgrind" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$WORK/callgrind.keypool "$(realpath "$KEYPOOL_BIN")" "\$@"
EOF
chmod +x "$WORK/keypool-callgrind"
KEYPOOL_BIN=$WORK/keypool-callgrind
start_keypool http://127.0.0.1:9001
counted keypool "$KP_PID" "http://127.0.0.1:$KP_PORT/v1/openai/v1/chat/completions" "Authorization: Bearer $TEAM_TOKEN"

# nginx: one process (no master), so the worker is the process callgrind follows.
px="$WORK/nginx-px"
mkdir -p "$px/logs" "$px/tmp"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.nginx" \
  nginx -p "$px" -c "$BENCH_DIR/nginx-proxy.conf" -e "$px/logs/error.log" -g 'daemon off; master_process off;' \
  2>"$px/valgrind.log" &
NGX_CG=$!
PIDS+=("$NGX_CG")
for i in $(seq 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:9002/ && break; sleep 0.2; done
counted nginx "$NGX_CG" http://127.0.0.1:9002/v1/openai/v1/chat/completions "Authorization: Bearer $TEAM_TOKEN"

awk '{per[$1] = $3 / $2} END {printf "keypool / nginx instructions per request: %.2f\n", per["keypool"] / per["nginx"]}' "$WORK/counts"
