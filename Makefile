# edge-gateway developer commands. `make run` and `make test` provision what they need.

ORT_VERSION := 1.31.1
ORT_DIR     := .ort
ORT_LIB     := $(ORT_DIR)/lib/libonnxruntime.so.$(ORT_VERSION)
MODEL       ?= onnx/models/edge-tiny-genai
BENCH_MODEL ?= .bench/bench-250m-genai

SDK_PY      := .venv/sdk/bin/python
SDK_STAMP   := .venv/sdk/.installed

.PHONY: ort sdk tools run test lint bench models bench-model deploy-check image deny fuzz fuzz-check soak

## ONNX Runtime shared library from the pinned PyPI wheel (no Python install needed at run time).
ort: $(ORT_LIB)

$(ORT_LIB):
	mkdir -p $(ORT_DIR)/wheel $(ORT_DIR)/lib
	python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.11 --platform manylinux_2_28_x86_64 \
		onnxruntime==$(ORT_VERSION) -d $(ORT_DIR)/wheel
	python3 -c "import glob, zipfile, shutil; \
		w = zipfile.ZipFile(glob.glob('$(ORT_DIR)/wheel/onnxruntime-$(ORT_VERSION)-*.whl')[0]); \
		src = w.open('onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)'); \
		shutil.copyfileobj(src, open('$(ORT_LIB)', 'wb'))"
	@echo "ONNX Runtime $(ORT_VERSION) provisioned at $(ORT_LIB)"

## Official OpenAI Python SDK, pinned, for the SDK compatibility test.
sdk: $(SDK_STAMP)

$(SDK_STAMP): tests/sdk/requirements.txt
	python3 -m venv .venv/sdk
	$(SDK_PY) -m pip install --quiet -r tests/sdk/requirements.txt
	touch $(SDK_STAMP)

## Validation tools (promtool, docker-compose, helm SDK, linters) in .cache/deploy and .venv/deploy.
tools:
	bash deploy/validate.sh --provision-only

## Serve the embedded default model on 127.0.0.1:8080 (override with EDGE_GATEWAY__SERVER__LISTEN).
run: ort
	cargo run --release --bin edge-gateway -- serve --model $(MODEL)

## Everything CI runs: formatting, lints, unit + integration tests, deployment checks.
test: ort sdk tools
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(MAKE) --no-print-directory fuzz-check
	bash .ci/deny.sh
	cargo test --all-targets
	bash deploy/validate.sh

## Dependency policy (deny.toml): licences, bans, sources offline; advisories when the RustSec
## database can be fetched (else reported as skipped).
deny:
	bash .ci/deny.sh

## The fuzz crate compiles and is clean (what CI can afford; fuzzing itself is `make fuzz`).
fuzz-check:
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --bins -- -D warnings

## Run every fuzz target for SECONDS each (cargo-fuzz, libFuzzer; fuzz/README.md).
SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(SECONDS)

## Sustained mixed load against the release gateway (benches/soak.sh; not in CI).
DURATION ?= 1800
soak:
	bash benches/soak.sh --duration $(DURATION)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## Rebuild the committed tiny models and fixtures (Python; never needed by run or test).
models:
	bash onnx/build_models.sh

## Build the ~250M-parameter benchmark model (random weights; not committed).
bench-model:
	bash onnx/build_bench_model.sh

## TTFT (512-token prompt) and decode tok/s: edge-gateway vs onnxruntime-genai on the same model,
## alternating the two engines PAIRS times (the VM's speed drifts).
PAIRS ?= 3
bench: ort
	bash benches/compare_genai.sh $(BENCH_MODEL) 512 128 3 $(PAIRS)

## Deployment checks that need no Docker engine or cluster: Dockerfile lint, compose config,
## Helm chart (schema, lint, render, Kubernetes schemas), shipped configs, the image layout run
## in a chroot. Provisions its tools into .venv/deploy and .cache/deploy (README, "Deployment").
deploy-check:
	bash deploy/validate.sh

## Container image edge-gateway:<Cargo.toml version> (needs Docker with BuildKit).
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image:
	docker build -t edge-gateway:$(IMAGE_TAG) .
