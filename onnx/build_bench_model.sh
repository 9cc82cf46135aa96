#!/usr/bin/env bash
# Build the ~246M-parameter RANDOM-weight Llama benchmark model with the onnxruntime-genai
# builder into .bench/ (git-ignored):
#
#     bash onnx/build_bench_model.sh                 # -p int8 -e cpu  -> .bench/bench-250m-genai
#     bash onnx/build_bench_model.sh -p int4 -e cuda # -> .bench/bench-250m-genai-int4-cuda
#     bash onnx/build_bench_model.sh -p fp16 -e cuda # -> .bench/bench-250m-genai-fp16-cuda
#
# CPU int8: GroupQueryAttention, float32 activations, KV and logits; the builder's 8-bit
# MatMulNBits weights are then rewritten by onnx/requantize_dynamic.py to dynamic int8 on
# MatMulInteger (per-column int8 weights, activations quantized per row at run time): on this
# CPU ONNX Runtime's QGemm kernels run prefill and multi-row decode steps several times faster
# than MatMulNBits, one row at about the same speed. `-q nbits` keeps the builder's graph.
# CUDA builds (run the builder here, no GPU needed): float16 activations, KV cache and logits;
# int4 = MatMulNBits 4-bit (block 32), fp16 = plain float16 MatMul weights. Their
# genai_config.json asks for the cuda provider; the gateway ignores that (it takes providers
# from model.execution_providers). Options: -p int8|int4|fp16|fp32, -e cpu|cuda, -o OUT,
# -q dynamic|nbits (CPU int8 only; default dynamic).
#
# Needs the venvs made by onnx/build_models.sh (it creates them if missing) and the committed
# tokenizer in onnx/models/edge-tiny-genai/; it does not need the trained tiny model.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PRECISION=int8
EP=cpu
OUT=""
QUANT=dynamic
while getopts "p:e:o:q:" opt; do
  case $opt in
    p) PRECISION=$OPTARG ;;
    e) EP=$OPTARG ;;
    o) OUT=$OPTARG ;;
    q) QUANT=$OPTARG ;;
    *) echo "usage: $0 [-p int8|int4|fp16|fp32] [-e cpu|cuda] [-o OUT] [-q dynamic|nbits]" >&2; exit 2 ;;
  esac
done
case $QUANT in
  dynamic|nbits) ;;
  *) echo "unsupported -q $QUANT (dynamic or nbits)" >&2; exit 2 ;;
esac
case "$PRECISION/$EP" in
  int8/cpu|int4/cpu|fp32/cpu|int8/cuda|int4/cuda|fp16/cuda) ;;
  *) echo "unsupported -p $PRECISION -e $EP (cpu: int8, int4, fp32; cuda: int4, int8, fp16)" >&2; exit 2 ;;
esac
if [[ -z $OUT ]]; then
  OUT="$ROOT/.bench/bench-250m-genai"
  [[ "$PRECISION/$EP" != int8/cpu ]] && OUT="$OUT-$PRECISION-$EP"
  [[ "$PRECISION/$EP/$QUANT" == int8/cpu/nbits ]] && OUT="$OUT-nbits"
fi
# -q applies to the CPU int8 model only.
[[ "$PRECISION/$EP" != int8/cpu ]] && QUANT=nbits
VENV="$ROOT/.venv"
BUILD="$ROOT/.bench/build"
export PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

if [[ ! -x "$VENV/optimum/bin/python" || ! -x "$VENV/genai/bin/python" ]]; then
  echo "venvs missing: creating them via onnx/build_models.sh (venv step only)"
  ONLY_VENVS=1 bash onnx/build_models.sh
fi

T0=$(date +%s)
mkdir -p "$BUILD"
"$VENV/optimum/bin/python" onnx/make_bench_hf.py --tokenizer-from onnx/models/edge-tiny-genai \
  --out "$BUILD/hf-bench-250m" 2>&1 | grep -v -e Warning -e warnings.warn
T1=$(date +%s)

rm -rf "$BUILD/genai-out" "$OUT"
"$VENV/genai/bin/python" -m onnxruntime_genai.models.builder -i "$BUILD/hf-bench-250m" \
  -o "$BUILD/genai-out" -p "$PRECISION" -e "$EP" -c "$BUILD/genai-cache" > "$BUILD/genai-builder.log" 2>&1 \
  || { tail -40 "$BUILD/genai-builder.log"; exit 1; }
T2=$(date +%s)

# same finishing step as the tiny model (eos/bos/pad, context_length, tokenizer files)
"$VENV/genai/bin/python" onnx/finalize_genai.py --build "$BUILD/genai-out" --hf "$BUILD/hf-bench-250m" \
  --out "$OUT" --no-tokenizer-check
if [[ "$PRECISION/$EP/$QUANT" == int8/cpu/dynamic ]]; then
  mv "$OUT" "$BUILD/genai-nbits"
  "$VENV/genai/bin/python" onnx/requantize_dynamic.py --src "$BUILD/genai-nbits" --out "$OUT"
  rm -rf "$BUILD/genai-nbits"
fi
"$VENV/optimum/bin/python" onnx/onnx_io.py "$OUT/model.onnx" | sed -n 1,8p
rm -rf "$BUILD/hf-bench-250m" "$BUILD/genai-out"   # ~1 GB of fp32 scratch
echo "bench model ($PRECISION, $EP, $QUANT): $OUT ($(du -sh "$OUT" | cut -f1)); random HF folder $((T1 - T0))s, genai builder $((T2 - T1))s, total $(( $(date +%s) - T0 ))s"
