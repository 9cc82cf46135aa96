#!/usr/bin/env bash
# Rebuilds tests/fixtures/edge-tiny-genai-faulty.onnx (committed) from onnx/models/edge-tiny-genai.
# Needs Python 3 and PyPI; creates .venv/faults (git-ignored) with pinned onnx and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/faults/bin/python ]; then
    python3 -m venv .venv/faults
    .venv/faults/bin/pip install --quiet onnx==1.23.2 numpy==2.4.6
fi
.venv/faults/bin/python onnx/build_fault_model.py
