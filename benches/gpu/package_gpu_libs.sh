#!/usr/bin/env bash
# Gather what a GPU run needs besides a GPU and pack it for a machine that is reached only
# through transfers of at most 64 MiB (the device tool), or unpack it for a local GPU box:
#
#   bash benches/gpu/package_gpu_libs.sh [--cuda-libs] [--tensorrt] [--model DIR] [--bins]
#                                        [--part-size 18M] [--out DIR] [--no-pack] [--check BIN]
#
#   always        onnxruntime-gpu==1.31.1 (CUDA 13, cuDNN 9): libonnxruntime.so.1.31.1,
#                 libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so
#   --cuda-libs   the CUDA 13 user libraries of deploy/docker/cuda-wheels.txt (cudart,
#                 cuBLAS/cuBLASLt, cuRAND, cuFFT, nvrtc, nvJitLink, cuDNN 9; about 2 GB
#                 unpacked), for boxes that lack them. The device tool's H200 image already has
#                 them in its Python environment, and benches/gpu/run_gpu_check.sh finds them there.
#   --tensorrt    also libonnxruntime_providers_tensorrt.so and TensorRT 10 (tensorrt-cu13-libs)
#   --model DIR   a model package to take along (e.g. .bench/bench-250m-genai-int4-cuda)
#   --bins        the release gateway, the generation bench and the cloud_overhead bench (cargo build --release; cargo
#                 bench --no-run), which run_gpu_check.sh uses
#
# Output (git-ignored), default DIR=.gpu:
#   DIR/lib/                      every library, flat: ORT_DYLIB_PATH=DIR/lib/libonnxruntime.so,
#                                 LD_LIBRARY_PATH=DIR/lib
#   DIR/bundle/gpu.tar.zst.NN     `tar | zstd -15 | split -b SIZE` of lib/ (+ model/, bin/), with
#                                 SHA256SUMS; carry one part per device call (README there). Each
#                                 call also sends the tracked tree (~45 MiB, mostly the committed
#                                 models) within its 64 MiB, hence 18M parts by default
#
# Finally, when an edge-gateway binary is found (--check BIN, else target/release, then
# target/debug) and there is no GPU here, it checks the libraries load far enough: `serve` with
# [cuda] and require_accelerator must stop with the documented message naming what this machine
# lacks (a CUDA user library, or the driver's libcuda.so.1), never start on CPU, never panic.
set -euo pipefail
cd "$(dirname "$0")/../.."

ORT_VERSION=1.31.1
TENSORRT_WHEEL="tensorrt-cu13-libs==10.16.1.11"
out=.gpu cuda_libs=0 tensorrt=0 model="" bins=0 pack=1 gateway_bin="" part_size=18M
while [[ $# -gt 0 ]]; do
  case $1 in
    --cuda-libs) cuda_libs=1 ;;
    --tensorrt) tensorrt=1 ;;
    --model) model=$2; shift ;;
    --bins) bins=1 ;;
    --part-size) part_size=$2; shift ;;
    --out) out=$2; shift ;;
    --no-pack) pack=0 ;;
    --check) gateway_bin=$2; shift ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
  shift
done
[[ -z $model || -f $model/genai_config.json || -f $model/config.json ]] \
  || { echo "--model $model: not a model package" >&2; exit 2; }

wheels=$out/wheels lib=$out/lib stage=$out/stage bundle=$out/bundle
mkdir -p "$wheels"
pip_download() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels" "$@"
}
echo "downloading onnxruntime-gpu==$ORT_VERSION"
pip_download "onnxruntime-gpu==$ORT_VERSION"
[[ $cuda_libs == 1 ]] && { echo "downloading deploy/docker/cuda-wheels.txt"; pip_download -r deploy/docker/cuda-wheels.txt; }
[[ $tensorrt == 1 ]] && { echo "downloading $TENSORRT_WHEEL"; pip_download "$TENSORRT_WHEEL"; }

rm -rf "$lib"
# The same extraction as the images: every libonnxruntime*.so* of the wheel (the TensorRT
# provider is dropped again below unless asked for), then NVIDIA's libraries.
python3 deploy/docker/extract_ort.py "$wheels/onnxruntime_gpu-$ORT_VERSION-"*.whl "$lib" "$ORT_VERSION"
[[ $tensorrt == 1 ]] || rm -f "$lib/libonnxruntime_providers_tensorrt.so"
if [[ $cuda_libs == 1 || $tensorrt == 1 ]]; then
  nvidia=$(mktemp -d)
  cp "$wheels"/nvidia_*.whl "$nvidia"/ 2>/dev/null || true
  [[ $tensorrt == 1 ]] && cp "$wheels"/tensorrt_*.whl "$nvidia"/
  [[ $cuda_libs == 1 ]] || rm -f "$nvidia"/nvidia_*.whl
  if [[ $cuda_libs == 1 ]]; then
    python3 deploy/docker/extract_cuda_libs.py "$nvidia" "$lib"
  else
    # TensorRT alone: the CUDA libraries are expected on the box already.
    python3 - "$nvidia" "$lib" <<'PY'
import glob, os, shutil, sys, zipfile
for wheel in glob.glob(os.path.join(sys.argv[1], "tensorrt_*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("tensorrt_libs/") and os.path.basename(name).startswith("lib"):
                with archive.open(name) as src, open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as dst:
                    shutil.copyfileobj(src, dst)
PY
  fi
  rm -rf "$nvidia"
fi
du -sh "$lib"

if [[ $pack == 1 ]]; then
  rm -rf "$stage" "$bundle"
  mkdir -p "$stage" "$bundle"
  ln -s "$(realpath "$lib")" "$stage/lib"
  if [[ -n $model ]]; then
    mkdir -p "$stage/model"
    ln -s "$(realpath "$model")" "$stage/model/$(basename "$model")"
  fi
  if [[ $bins == 1 ]]; then
    echo "building the release gateway and the generation and cloud_overhead benches"
    cargo build --release --bin edge-gateway
    bench_exe() {
      cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys; n=sys.argv[1]; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == n][-1])' "$1"
    }
    mkdir -p "$stage/bin"
    cp target/release/edge-gateway "$stage/bin/edge-gateway"
    cp "$(bench_exe generation)" "$stage/bin/generation"
    cp "$(bench_exe cloud_overhead)" "$stage/bin/cloud_overhead"
    strip --strip-debug "$stage/bin/edge-gateway" "$stage/bin/generation" "$stage/bin/cloud_overhead"
  fi
  echo "packing $(find -L "$stage" -type f | wc -l) files into $part_size parts (zstd -15)"
  tar -C "$stage" -chf - . | zstd -q -15 -T0 | split -b "$part_size" -d -a 2 - "$bundle/gpu.tar.zst."
  (cd "$bundle" && sha256sum gpu.tar.zst.* >SHA256SUMS)
  rm -rf "$stage"
  ls -l "$bundle"
  echo "carry each $bundle/gpu.tar.zst.NN in its own device call; see benches/gpu/README.md"
fi

# --- load check -------------------------------------------------------------------------------
if [[ -z $gateway_bin ]]; then
  for candidate in target/release/edge-gateway target/debug/edge-gateway; do
    [[ -x $candidate ]] && { gateway_bin=$candidate; break; }
  done
fi
if [[ -z $gateway_bin ]]; then
  echo "no edge-gateway binary: load check skipped"
  exit 0
fi
if nvidia-smi >/dev/null 2>&1; then
  echo "a GPU is present: run benches/gpu/run_gpu_check.sh instead of the no-GPU load check"
  exit 0
fi
config=$(mktemp --suffix .yaml)
log=$(mktemp)
trap 'rm -f "$config" "$log"' EXIT
printf 'model:\n  execution_providers: [cuda]\n  require_accelerator: true\nembeddings:\n  enabled: false\nreview:\n  db_path: %s\n' \
  "$(mktemp -d)/reviews.db" >"$config"
rc=0
ORT_DYLIB_PATH="$lib/libonnxruntime.so" LD_LIBRARY_PATH="$lib" EDGE_GATEWAY__SERVER__LISTEN=127.0.0.1:0 \
  timeout 120 "$gateway_bin" serve --config "$config" >"$log" 2>&1 || rc=$?
reason=$(grep -m1 '^edge-gateway: ' "$log" || true)
echo "load check with $gateway_bin (no GPU here): exit $rc"
echo "  $reason"
if [[ $rc == 0 || $rc == 124 ]] || grep -q panicked "$log"; then
  echo "FAIL: expected startup to stop with the documented message"
  exit 1
fi
if [[ $reason != *"execution provider cuda is required (model.require_accelerator: true) but did not attach"* ]]; then
  echo "FAIL: not the documented require_accelerator message"
  exit 1
fi
if ! grep -qE "cannot open shared object file|CUDA-capable device|CUDA driver" <<<"$reason"; then
  echo "FAIL: the message names neither a missing library nor the device"
  exit 1
fi
echo "ok: the GPU build of ONNX Runtime loads; the CUDA provider stops at what this machine lacks"
