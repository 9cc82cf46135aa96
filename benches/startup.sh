#!/usr/bin/env bash
# Start-to-ready time of the gateway binary on a model directory, with and without ORT's
# optimized-graph cache: process start until /readyz answers 200.
#   usage: benches/startup.sh MODEL_DIR [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model directory}
port=${2:-18089}
bin=target/release/edge-gateway
cargo build --release --quiet --bin edge-gateway
cache_dir=$(mktemp -d)
trap 'rm -rf "$cache_dir"' EXIT

ready_after() {
  local start end pid
  start=$(date +%s.%N)
  EDGE_GATEWAY__SERVER__LISTEN=127.0.0.1:$port EDGE_GATEWAY__LOGGING__LEVEL=warn \
    EDGE_GATEWAY__CACHE__OPTIMIZED_GRAPH_DIR="$1" "$bin" serve --model "$model" 2>/dev/null &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.02; done
  end=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{$end - $start:.2f}')"
}

echo "no graph cache:              $(ready_after "") s"
echo "graph cache, first start:    $(ready_after "$cache_dir") s (optimizes and writes the graph)"
echo "graph cache, restart:        $(ready_after "$cache_dir") s"
echo "graph cache, restart again:  $(ready_after "$cache_dir") s"
