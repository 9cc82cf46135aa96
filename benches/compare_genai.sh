#!/usr/bin/env bash
# Runs edge-gateway's generation bench and onnxruntime-genai's Python API on the same model
# directory, one after the other on the same machine, and prints the decode and TTFT ratios.
#   usage: benches/compare_genai.sh MODEL_DIR [PROMPT_TOKENS] [DECODE_TOKENS] [RUNS] [PAIRS]
# PAIRS > 1 alternates the two engines that many times and compares the medians of their
# per-pair figures: on a shared VM whose speed drifts by tens of percent within minutes, one
# run of each can differ more from the other by when it ran than by what it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model directory}
prompt=${2:-512}
decode=${3:-128}
runs=${4:-3}
pairs=${5:-1}
genai_python=${GENAI_PYTHON:-.venv/genai/bin/python}
if [ ! -d "$model" ]; then
  echo "model $model not found; build it with 'make bench-model'" >&2
  exit 1
fi
if [ ! -x "$genai_python" ]; then
  echo "onnxruntime-genai venv not found at $genai_python; 'make models' creates it" >&2
  exit 1
fi

cargo bench --quiet --no-run --bench generation
ours_all=()
theirs_all=()
for ((i = 1; i <= pairs; i++)); do
  ours_all+=("$(cargo bench --quiet --bench generation -- --model "$model" --prompt-tokens "$prompt" --decode-tokens "$decode" --runs "$runs" | tee /dev/stderr | tail -n 1)")
  theirs_all+=("$("$genai_python" benches/genai_baseline.py --model "$model" --prompt-tokens "$prompt" --decode-tokens "$decode" --runs "$runs" | tee /dev/stderr | tail -n 1)")
done

python3 - "$pairs" "${ours_all[@]}" "${theirs_all[@]}" <<'PY'
import json, statistics, sys
pairs = int(sys.argv[1])
runs = [json.loads(a) for a in sys.argv[2:]]
def merged(rs):
    return {"ttft_s": statistics.median(r["ttft_s"] for r in rs),
            "decode_tok_s": statistics.median(r["decode_tok_s"] for r in rs),
            "per_pair_decode_tok_s": [r["decode_tok_s"] for r in rs]}
ours, theirs = merged(runs[:pairs]), merged(runs[pairs:])
if pairs > 1:
    print(f"{pairs} alternating pairs; medians of the per-pair figures")
print(f"decode tok/s: edge-gateway {ours['decode_tok_s']:.1f} vs onnxruntime-genai {theirs['decode_tok_s']:.1f} "
      f"-> ratio {ours['decode_tok_s'] / theirs['decode_tok_s']:.2f}x")
print(f"TTFT (s):     edge-gateway {ours['ttft_s']:.3f} vs onnxruntime-genai {theirs['ttft_s']:.3f} "
      f"-> ratio {theirs['ttft_s'] / ours['ttft_s']:.2f}x (higher is better for edge-gateway)")
print(json.dumps({"edge_gateway": ours, "onnxruntime_genai": theirs,
                  "decode_ratio": ours['decode_tok_s'] / theirs['decode_tok_s']}))
PY
