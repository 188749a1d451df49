#!/usr/bin/env bash
# Streaming (SSE) overhead: a python3 upstream on 127.0.0.1:9011 paces EVENTS events INTERVAL_MS
# apart; the client reads the stream directly, through keypool and through nginx with
# proxy_buffering off (nginx-sse-proxy.conf, :9012), RUNS streams each, interleaved. Prints the
# added time to first event, the added per-event delay and the added inter-event gap.
# Usage: bench/sse.sh            env: RUNS=5 EVENTS=64 INTERVAL_MS=20 KP_PORT=9080 KEYPOOL_BIN=...
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
EVENTS=${EVENTS:-64}
INTERVAL_MS=${INTERVAL_MS:-20}
need nginx; need curl; need jq; need python3
check_ports 9011 9012 "$KP_PORT"
machine_note

python3 "$BENCH_DIR/sse_upstream.py" 9011 "$EVENTS" "$INTERVAL_MS" &
PIDS+=($!)
start_nginx sse "$BENCH_DIR/nginx-sse-proxy.conf"
NKEYS=${NKEYS:-2} start_keypool http://127.0.0.1:9011
wait_http http://127.0.0.1:9011/
wait_http http://127.0.0.1:9012/

echo "# $EVENTS events ${INTERVAL_MS} ms apart per stream, $RUNS streams per target (+1 warm-up)"
timeout 300 python3 "$BENCH_DIR/sse_client.py" "$RUNS" \
  "direct=127.0.0.1:9011/v1/chat/completions@Bearer sk-test" \
  "keypool=127.0.0.1:$KP_PORT/v1/openai/v1/chat/completions@Bearer $TEAM_TOKEN" \
  "nginx=127.0.0.1:9012/v1/openai/v1/chat/completions@Bearer $TEAM_TOKEN" | grep -v '^RESULTS_JSON'
check_keypool_alive
