#!/usr/bin/env bash
# Runs edge-gateway's generation bench and onnxruntime-genai's Python API on the same model
# directory, one after the other on the same machine, and prints the decode and TTFT ratios.
#   usage: benches/compare_genai.sh MODEL_DIR [PROMPT_TOKENS] [DECODE_TOKENS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model directory}
prompt=${2:-512}
decode=${3:-128}
runs=${4:-3}
genai_python=${GENAI_PYTHON:-.venv/genai/bin/python}
if [ ! -d "$model" ]; then
  echo "model $model not found; build it with 'make bench-model'" >&2
  exit 1
fi
if [ ! -x "$genai_python" ]; then
  echo "onnxruntime-genai venv not found at $genai_python; 'make models' creates it" >&2
  exit 1
fi

ours=$(cargo bench --quiet --bench generation -- --model "$model" --prompt-tokens "$prompt" --decode-tokens "$decode" --runs "$runs" | tee /dev/stderr | tail -n 1)
theirs=$("$genai_python" benches/genai_baseline.py --model "$model" --prompt-tokens "$prompt" --decode-tokens "$decode" --runs "$runs" | tee /dev/stderr | tail -n 1)

python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"decode tok/s: edge-gateway {ours['decode_tok_s']:.1f} vs onnxruntime-genai {theirs['decode_tok_s']:.1f} "
      f"-> ratio {ours['decode_tok_s'] / theirs['decode_tok_s']:.2f}x")
print(f"TTFT (s):     edge-gateway {ours['ttft_s']:.3f} vs onnxruntime-genai {theirs['ttft_s']:.3f} "
      f"-> ratio {theirs['ttft_s'] / ours['ttft_s']:.2f}x (higher is better for edge-gateway)")
print(json.dumps({"edge_gateway": ours, "onnxruntime_genai": theirs,
                  "decode_ratio": ours['decode_tok_s'] / theirs['decode_tok_s']}))
PY
