#!/usr/bin/env bash
# Side-by-side proxy overhead in one run: upstream nginx (1 worker, fixed ~260 B JSON, :9001)
# called directly, through keypool (1 worker, :KP_PORT) and through nginx doing the same
# rewrite and key injection (nginx-proxy.conf, 1 worker, :9002). wrk -t1 at 1 connection and at
# 64 connections, RUNS rounds of DURATION seconds, targets interleaved within each round and
# the order rotated from round to round.
# Prints medians: added p50/p99 at concurrency 1, req/s, p99 and CPU per request at 64, the
# ratios keypool/nginx, and RSS of keypool (idle, under load, after).
# Usage: bench/proxy.sh            env: RUNS=3 DURATION=5 KP_PORT=9080 NKEYS=20 KEYPOOL_BIN=...
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
need wrk; need nginx; need curl; need jq; need python3
check_ports 9001 9002 "$KP_PORT"
machine_note

start_nginx up "$BENCH_DIR/nginx-upstream.conf"
start_nginx px "$BENCH_DIR/nginx-proxy.conf"
start_keypool http://127.0.0.1:9001
wait_http http://127.0.0.1:9001/
wait_http http://127.0.0.1:9002/

declare -A URL PID HDR
URL[direct]=http://127.0.0.1:9001/v1/chat/completions
URL[nginx]=http://127.0.0.1:9002/v1/openai/v1/chat/completions
URL[keypool]=http://127.0.0.1:$KP_PORT/v1/openai/v1/chat/completions
HDR[direct]="Authorization: Bearer sk-test"
HDR[nginx]="Authorization: Bearer $TEAM_TOKEN"
HDR[keypool]="Authorization: Bearer $TEAM_TOKEN"
PID[direct]=$NGX_PID_up     # CPU figures: the process that serves the target port
PID[nginx]=$NGX_PID_px
PID[keypool]=$KP_PID
TARGETS=(direct nginx keypool)

# Sanity: all three return the upstream's 200 and the same body.
ref=$(curl -sf -H "${HDR[direct]}" "${URL[direct]}") || die "upstream did not answer 200"
for t in nginx keypool; do
  got=$(curl -sf -H "${HDR[$t]}" "${URL[$t]}") || die "$t did not answer 200"
  [[ "$got" == "$ref" ]] || die "$t returned a different body"
done
echo "# upstream body ${#ref} B + newline; direct, nginx and keypool answer 200 with the same body"

sleep 0.5
KP_RSS_IDLE=$(rss_kb "$KP_PID"); NG_RSS_IDLE=$(rss_kb "$NGX_PID_px")
for t in "${TARGETS[@]}"; do timeout 20 wrk -t1 -c64 -d1s -H "${HDR[$t]}" "${URL[$t]}" >/dev/null; done  # warm-up

# Round i starts at target i (mod 3): with a fixed order one target would always run right
# after the same other one, and a drift that follows the order (the upstream warming, a
# periodic neighbour on this VM) would land on it every time.
in_order() {
  local i=$1 k n=${#TARGETS[@]}
  for ((k = 0; k < n; k++)); do echo "${TARGETS[$(((i + k) % n))]}"; done
}
for i in $(seq "$RUNS"); do
  for t in $(in_order "$i"); do run_wrk "c1_$t" "${PID[$t]}" 1 "$DURATION" "${URL[$t]}" "${HDR[$t]}"; done
done
for i in $(seq "$RUNS"); do
  for t in $(in_order "$i"); do run_wrk "c64_$t" "${PID[$t]}" 64 "$DURATION" "${URL[$t]}" "${HDR[$t]}"; done
done
sleep 1
KP_RSS_AFTER=$(rss_kb "$KP_PID"); KP_RSS_PEAK=$(hwm_kb "$KP_PID")

python3 "$BENCH_DIR/proxy_report.py" "$WORK/results" "$RUNS" "$DURATION" \
  "$KP_RSS_IDLE" "$KP_RSS_AFTER" "$KP_RSS_PEAK" "$NG_RSS_IDLE"
