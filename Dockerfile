# edge-gateway container image: a release build of the gateway, the pinned ONNX Runtime library
# from its PyPI wheel, the committed default model, routing policy and versioned prompts, run as a
# non-root user. The review database, model state and audit log go to /var/lib/edge-gateway.
#
#   docker build -t edge-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 -e EDGE_GATEWAY_API_KEY=... -e EDGE_GATEWAY_ADMIN_KEY=... \
#       -e EDGE_GATEWAY_AUDIT_KEY=... edge-gateway:0.1.0
#
# The CUDA image is Dockerfile.cuda: the same stages plus the CUDA 13 user libraries. Arguments:
#   ORT_PACKAGE    onnxruntime (CPU, default); onnxruntime-gpu alone lacks the CUDA libraries
#   ORT_VERSION    ONNX Runtime version; must match the `api-NN` feature of the ort crate
#   RUNTIME_IMAGE  base of the final stage; needs glibc >= the builder's (Debian 12: 2.36), bash
#                  and useradd
#   MODEL_DIR / MODEL_NAME  model package baked into the image (must not be .dockerignore'd)
# Needs BuildKit (Docker's default builder since 23.0) for the cargo cache mounts; no `# syntax`
# line, so an offline builder does not have to fetch a frontend image. See README, "Deployment".

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG PYTHON_IMAGE=python:3.12-slim-${DEBIAN_RELEASE}
ARG RUNTIME_IMAGE=debian:${DEBIAN_RELEASE}-slim

# --- ONNX Runtime shared library, unpacked from the pinned PyPI wheel (no Python at run time) ---
FROM ${PYTHON_IMAGE} AS ort
ARG ORT_PACKAGE=onnxruntime
ARG ORT_VERSION=1.31.1
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /tmp/ort
COPY deploy/docker/extract_ort.py ./
RUN case "${TARGETARCH:-amd64}" in \
        amd64) platform=manylinux_2_28_x86_64 ;; \
        arm64) platform=manylinux_2_28_aarch64 ;; \
        *) echo "unsupported architecture: ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && pip download --no-cache-dir --no-deps --only-binary=:all: \
        --python-version 3.12 --platform "${platform}" \
        "${ORT_PACKAGE}==${ORT_VERSION}" -d wheel \
    && python extract_ort.py wheel/*.whl /opt/onnxruntime/lib "${ORT_VERSION}"

# --- Release build of the gateway ---
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches by path, so the manifest does not load without them.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin edge-gateway \
    && install -D -m 0755 target/release/edge-gateway /out/edge-gateway \
    && strip --strip-debug /out/edge-gateway

# --- Runtime ---
FROM ${RUNTIME_IMAGE} AS runtime
ARG MODEL_DIR=onnx/models/edge-tiny-genai
ARG MODEL_NAME=edge-tiny-genai
ARG UID=10001
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

LABEL org.opencontainers.image.title="edge-gateway" \
      org.opencontainers.image.description="OpenAI-compatible edge LLM gateway with local ONNX Runtime inference" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid "${UID}" edge \
    && useradd --system --uid "${UID}" --gid edge --home-dir /var/lib/edge-gateway \
        --no-create-home --shell /usr/sbin/nologin edge \
    && install -d -o edge -g edge -m 0750 /var/lib/edge-gateway /var/cache/edge-gateway

COPY --from=ort /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=build /out/edge-gateway /usr/local/bin/edge-gateway
COPY deploy/docker/healthcheck.sh /usr/local/bin/edge-gateway-healthcheck
COPY deploy/docker/gateway.yaml /etc/edge-gateway/gateway.yaml
COPY policies /etc/edge-gateway/policies
# Versioned system prompts (<name>/<version>.yaml); read at start and on POST /admin/prompts/reload.
COPY prompts /etc/edge-gateway/prompts
COPY ${MODEL_DIR} /opt/edge-gateway/models/${MODEL_NAME}
# The encoder behind /v1/embeddings and the semantic routing scorers, and the scorers'
# exemplars (also under policies/, which deployments may mount over).
COPY onnx/models/all-minilm-l6-v2-int8 /opt/edge-gateway/models/all-minilm-l6-v2-int8
COPY policies/exemplars /etc/edge-gateway/exemplars
RUN sed -i "s|/opt/edge-gateway/models/edge-tiny-genai|/opt/edge-gateway/models/${MODEL_NAME}|" \
        /etc/edge-gateway/gateway.yaml

# The GPU variant's provider libraries sit next to libonnxruntime and are found from there.
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so \
    LD_LIBRARY_PATH=/opt/onnxruntime/lib

USER ${UID}:${UID}
WORKDIR /var/lib/edge-gateway
VOLUME ["/var/lib/edge-gateway"]
EXPOSE 8080

# Healthy once the model is loaded and warmed (/readyz); the start period covers loading.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/edge-gateway-healthcheck", "/readyz"]

ENTRYPOINT ["/usr/local/bin/edge-gateway"]
CMD ["serve", "--config", "/etc/edge-gateway/gateway.yaml"]
