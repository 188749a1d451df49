#!/usr/bin/env bash
# GET /key throughput and latency: one keypool worker on loopback, wrk -t1 at 64 connections
# and at 1 connection, RUNS runs of DURATION seconds each (medians printed). For scale, the
# same wrk runs against one nginx worker answering a fixed ~260 B JSON body (no work at all),
# interleaved: the machine's own floor for throughput and p99.
# Goal from the issue: >= 100k req/s on one core and p99 < 1 ms at 64 connections.
# Usage: bench/getkey.sh            env: RUNS=3 DURATION=10 KP_PORT=9080 NKEYS=20 KEYPOOL_BIN=...
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
need wrk; need curl; need jq; need python3; need nginx
check_ports "$KP_PORT" 9001
machine_note

start_nginx up "$BENCH_DIR/nginx-upstream.conf"   # the reference, never called by keypool
start_keypool http://127.0.0.1:9001    # no upstream is contacted by /key
wait_http http://127.0.0.1:9001/
NGX_URL=http://127.0.0.1:9001/key
NGX_HDR="Authorization: Bearer sk-reference"
URL="http://127.0.0.1:$KP_PORT/key?feature=img"
HDR="Authorization: Bearer $ADMIN_TOKEN"
curl -sf -H "$HDR" "$URL" | jq -e '.value | startswith("sk-bench-")' >/dev/null || die "GET /key gave no key"
sleep 0.5
RSS_IDLE=$(rss_kb "$KP_PID")

timeout 20 wrk -t1 -c64 -d2s "$URL" -H "$HDR" >/dev/null   # warm-up, not counted
timeout 20 wrk -t1 -c64 -d1s "$NGX_URL" -H "$NGX_HDR" >/dev/null
for i in $(seq "$RUNS"); do
  run_wrk c64 "$KP_PID" 64 "$DURATION" "$URL" "$HDR"
  run_wrk ngx_c64 "$NGX_PID_up" 64 "$DURATION" "$NGX_URL" "$NGX_HDR"
  run_wrk c1 "$KP_PID" 1 "$DURATION" "$URL" "$HDR"
  run_wrk ngx_c1 "$NGX_PID_up" 1 "$DURATION" "$NGX_URL" "$NGX_HDR"
done
sleep 1
RSS_AFTER=$(rss_kb "$KP_PID")
RSS_PEAK=$(hwm_kb "$KP_PID")

python3 "$BENCH_DIR/getkey_report.py" "$WORK/results" "$RUNS" "$DURATION" "$RSS_IDLE" "$RSS_AFTER" "$RSS_PEAK" "$NKEYS"
