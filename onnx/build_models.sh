#!/usr/bin/env bash
# Rebuild the tiny test models and the greedy reference fixtures from scratch (no downloads
# besides PyPI packages). Run from the repository root:
#
#     bash onnx/build_models.sh
#
# Produces (committed):
#   onnx/models/edge-tiny-optimum/   Optimum export + quantize_dynamic int8
#   onnx/models/edge-tiny-genai/     onnxruntime-genai builder, -p int8 (MatMulNBits)
#   tests/fixtures/reference_greedy.json
#   onnx/models/edge-tiny-genai-fp16/, tests/fixtures/reference_greedy_fp16.json
#                                    float16 KV/logits build of the same weights (build_fp16_model.sh)
# Scratch (git-ignored): .venv/optimum, .venv/genai, .venv/build/*
#
# Env knobs: SKIP_TRAIN=1 reuses .venv/build/hf-tiny; TRAIN_STEPS (default 1000);
#            ONLY_VENVS=1 only creates the venvs;
#            PYTHON (default python3, must be 3.10-3.12).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
BUILD="$VENV/build"
HF="$BUILD/hf-tiny"
MODELS="$ROOT/onnx/models"
TORCH_VERSION="2.8.0"
export PYTHONHASHSEED=0
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

log() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# make_venv NAME REQUIREMENTS: create .venv/NAME once per requirements content
make_venv() {
  local name="$1" req="$2" dir="$VENV/$1"
  local stamp="$dir/.built-$(cat "$req" | sha256sum | cut -c1-16)-torch$TORCH_VERSION"
  if [[ -f "$stamp" ]]; then
    log "venv $name up to date"
    return
  fi
  log "creating venv $name"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip==26.3
  # CPU-only torch if the PyTorch CPU index is reachable, else the (CUDA-flavoured) PyPI wheel.
  if ! "$dir/bin/python" -m pip install -q --timeout 20 --retries 0 "torch==$TORCH_VERSION" \
        --index-url https://download.pytorch.org/whl/cpu; then
    echo "PyTorch CPU index unreachable; installing torch==$TORCH_VERSION from PyPI"
    "$dir/bin/python" -m pip install -q "torch==$TORCH_VERSION"
  fi
  "$dir/bin/python" -m pip install -q -r "$req"
  touch "$stamp"
}

T0=$(date +%s)
make_venv optimum onnx/requirements-optimum.txt
make_venv genai onnx/requirements-genai.txt
OPT="$VENV/optimum/bin/python"
GEN="$VENV/genai/bin/python"
if [[ "${ONLY_VENVS:-0}" == "1" ]]; then
  log "venvs ready (ONLY_VENVS=1)"
  exit 0
fi
mkdir -p "$BUILD"

# 1. corpus + tokenizer + tiny Llama (HF folder, scratch)
if [[ "${SKIP_TRAIN:-0}" == "1" && -f "$HF/model.safetensors" ]]; then
  log "reusing $HF"
else
  log "training tiny model"
  rm -rf "$HF"
  "$OPT" onnx/train_tiny.py --out "$HF" --steps "${TRAIN_STEPS:-1000}" --threads 2 2>&1 \
    | grep --line-buffered -v -e "Warning" -e "warnings.warn" | tee "$BUILD/train.log"
fi

# 2. Optimum layout: fp32 export, then dynamic int8
log "optimum export"
rm -rf "$BUILD/optimum-fp32"
"$VENV/optimum/bin/optimum-cli" export onnx --model "$HF" --task text-generation-with-past \
  "$BUILD/optimum-fp32" > "$BUILD/optimum-export.log" 2>&1 || { tail -40 "$BUILD/optimum-export.log"; exit 1; }
log "optimum quantize_dynamic int8"
"$OPT" onnx/quantize_optimum.py --export "$BUILD/optimum-fp32" --hf "$HF" \
  --out "$MODELS/edge-tiny-optimum" 2> "$BUILD/quantize.log"

# 3. onnxruntime-genai layout
log "onnxruntime-genai builder (int8, cpu)"
rm -rf "$BUILD/genai-out"
"$GEN" -m onnxruntime_genai.models.builder -i "$HF" -o "$BUILD/genai-out" -p int8 -e cpu \
  -c "$BUILD/genai-cache" > "$BUILD/genai-builder.log" 2>&1 || { tail -40 "$BUILD/genai-builder.log"; exit 1; }
"$GEN" onnx/finalize_genai.py --build "$BUILD/genai-out" --hf "$HF" --out "$MODELS/edge-tiny-genai"

# 4. model I/O
log "model inputs/outputs"
"$OPT" onnx/onnx_io.py "$MODELS/edge-tiny-optimum/model.onnx" --json "$BUILD/io-optimum.json"
"$OPT" onnx/onnx_io.py "$MODELS/edge-tiny-genai/model.onnx" --json "$BUILD/io-genai.json"

# 5. greedy reference fixtures
log "reference fixtures"
"$OPT" onnx/reference.py optimum --models "$MODELS" --hf "$HF" --stage "$BUILD/reference_stage1.json" \
  2> >(grep -v -e "Warning" -e "warn" >&2)
"$GEN" onnx/reference.py genai --models "$MODELS" --stage "$BUILD/reference_stage1.json" \
  --out tests/fixtures/reference_greedy.json --report "$BUILD/reference_agreement.json"

# 6. float16 build of the same weights (KV cache, activations, logits) and its fixture
log "float16 model"
bash onnx/build_fp16_model.sh

log "done in $(( $(date +%s) - T0 ))s"
du -sh "$MODELS"/* tests/fixtures/reference_greedy.json tests/fixtures/reference_greedy_fp16.json
