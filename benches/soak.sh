#!/usr/bin/env bash
# Soak test (not in CI): the release gateway under sustained mixed load — chat, completions,
# streaming, embeddings, route explain, streams cancelled by the client and bad requests — for
# a given time, sampling RSS, open file descriptors, KV bytes in use and p99 latency per interval
# from /proc and /metrics. Prints RSS growth, p99 drift and the error rate, and writes JSON.
#
#   benches/soak.sh [--model DIR] [--duration SECONDS] [--interval SECONDS]
#                   [--concurrency N] [--json FILE] [--max-error-rate R] [--max-rss-growth-mb M]
#   make soak DURATION=1800
#
# Default model: .bench/bench-250m-genai (`make bench-model`) when it exists, else the committed
# tiny model. Default duration 1800 s (30 min), interval 60 s (shorter runs: a tenth of the
# duration). EDGE_GATEWAY_BIN picks another binary (default: cargo build --release). Traffic
# goes to 127.0.0.1 only; the run stops by itself. Exit status 1 when the gateway died or a
# --max-* limit was exceeded.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

model=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ -z "$model" ]; then
    if [ -d .bench/bench-250m-genai ]; then model=.bench/bench-250m-genai; else model=onnx/models/edge-tiny-genai; fi
fi

bin="${EDGE_GATEWAY_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --quiet --bin edge-gateway
    bin=target/release/edge-gateway
fi
make --no-print-directory ort >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
log="$work/gateway.log"
cleanup() {
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

EDGE_GATEWAY__SERVER__LISTEN="127.0.0.1:$port" \
EDGE_GATEWAY__REVIEW__DB_PATH="$work/reviews.db" \
EDGE_GATEWAY__LOGGING__LEVEL=warn \
EDGE_GATEWAY__ROUTING__RELOAD_INTERVAL_MS=0 \
    "$bin" serve --model "$model" >"$log" 2>&1 &
pid=$!
echo "soak: gateway pid $pid on 127.0.0.1:$port, model $model, binary $bin" >&2

status=0
python3 benches/soak.py --url "http://127.0.0.1:$port" --pid "$pid" --log "$log" "${args[@]}" || status=$?
exit "$status"
