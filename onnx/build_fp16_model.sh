#!/usr/bin/env bash
# Build the committed float16 test model and its greedy reference fixture from the trained tiny
# model (the same weights as onnx/models/edge-tiny-genai). Run from the repository root:
#
#     bash onnx/build_fp16_model.sh        # also run by onnx/build_models.sh, at its end
#
# Produces (committed):
#   onnx/models/edge-tiny-genai-fp16/      onnxruntime-genai builder, -p int8 -e cuda: MatMulNBits
#                                          8-bit weights, float16 activations, KV cache and logits,
#                                          GroupQueryAttention with a shared KV buffer; ONNX
#                                          Runtime's CPU provider runs it (float16 kernels)
#   tests/fixtures/reference_greedy_fp16.json
# Needs .venv/build/hf-tiny (made by onnx/build_models.sh; a re-run of its training step gives
# the same weights) and the venvs it creates.
#
# Why `-e cuda`: that is the graph a CUDA deployment runs. `-p fp16 -e cpu` produces another
# graph (MultiHeadAttention, no shared buffer, float16 MatMul weights, 2x the size) which
# onnxruntime-genai 0.18 cannot run on CPU past the first step (a buffer-reuse error in an
# inserted Cast), and float16 weights would put this package near 10 MB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
BUILD="$VENV/build"
HF="$BUILD/hf-tiny"
OUT="$ROOT/onnx/models/edge-tiny-genai-fp16"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

if [[ ! -f "$HF/model.safetensors" ]]; then
  echo "$HF missing: run bash onnx/build_models.sh (it trains the tiny model, then calls this)" >&2
  exit 1
fi
# The committed int8 model was built from these weights: the tokenizer must be the committed
# one, and training must have run all its steps (on a slow machine train_tiny.py's time box,
# --max-minutes, stops it early with a warning and different weights).
cmp -s "$HF/tokenizer.json" onnx/models/edge-tiny-genai/tokenizer.json \
  || { echo "$HF/tokenizer.json differs from the committed one: not the same training run" >&2; exit 1; }
if grep -q "time box hit" "$BUILD/train.log" 2>/dev/null; then
  echo "$BUILD/train.log: training stopped at its time box; re-run onnx/train_tiny.py with a larger --max-minutes" >&2
  exit 1
fi

rm -rf "$BUILD/genai-fp16-out"
"$VENV/genai/bin/python" -m onnxruntime_genai.models.builder -i "$HF" -o "$BUILD/genai-fp16-out" \
  -p int8 -e cuda -c "$BUILD/genai-cache" > "$BUILD/genai-fp16-builder.log" 2>&1 \
  || { tail -40 "$BUILD/genai-fp16-builder.log"; exit 1; }
"$VENV/genai/bin/python" onnx/finalize_genai.py --build "$BUILD/genai-fp16-out" --hf "$HF" --out "$OUT" \
  --no-tokenizer-check
"$VENV/optimum/bin/python" onnx/onnx_io.py "$OUT/model.onnx" --json "$BUILD/io-genai-fp16.json"
"$VENV/genai/bin/python" onnx/reference.py genai-fp16 --model "$OUT" \
  --cases tests/fixtures/reference_greedy.json --out tests/fixtures/reference_greedy_fp16.json \
  --report "$BUILD/reference_agreement_fp16.json"
du -sh "$OUT" tests/fixtures/reference_greedy_fp16.json
