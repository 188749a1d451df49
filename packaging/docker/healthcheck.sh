#!/bin/bash
# keypool liveness/readiness check without curl (debian:12-slim has none): GET /health over
# bash's /dev/tcp, success only on "HTTP/1.x 200". Used by the image's HEALTHCHECK and by
# the Kubernetes exec probes (keypool listens on 127.0.0.1 in the pod, which kubelet's
# httpGet probes cannot reach: they connect to the pod IP).
# Env: KEYPOOL_HEALTH_HOST (default 127.0.0.1), SERVER_PORT (default 8080). Exit 0 = healthy.
host=${KEYPOOL_HEALTH_HOST:-127.0.0.1}
port=${SERVER_PORT:-8080}
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3 || exit 1
IFS= read -r -t 3 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "keypool health: ${status:-no answer}" >&2; exit 1 ;;
esac
