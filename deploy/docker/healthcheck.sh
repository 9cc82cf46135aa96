#!/bin/bash
# Health check for the container image, without curl or wget in the image: sends one
# `GET PATH HTTP/1.0` over bash's /dev/tcp and succeeds on a 200 status line.
#
# usage: edge-gateway-healthcheck [PATH] [HOST] [PORT]
#   PATH  /readyz (default: model loaded and warmed) or /healthz (process up)
#   HOST  default 127.0.0.1
#   PORT  default: $EDGE_GATEWAY_HEALTH_PORT, else the port of $EDGE_GATEWAY__SERVER__LISTEN,
#         else 8080
set -euo pipefail

path="${1:-/readyz}"
host="${2:-127.0.0.1}"
listen="${EDGE_GATEWAY__SERVER__LISTEN:-}"
port="${3:-${EDGE_GATEWAY_HEALTH_PORT:-${listen##*:}}}"
port="${port:-8080}"

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
    echo "unhealthy: cannot connect to ${host}:${port}" >&2
    exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "${path}" "${host}" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3>&-
case "${status}" in
    "HTTP/1."?" 200"*) exit 0 ;;
esac
echo "unhealthy: GET ${path} on ${host}:${port} answered '${status%$'\r'}'" >&2
exit 1
