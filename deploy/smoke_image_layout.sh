#!/usr/bin/env bash
# Runs the gateway the way the container image does, without a container engine: a chroot laid
# out like the Dockerfile's runtime stage (this host's Debian 12 userland standing in for
# debian:bookworm-slim), ONNX Runtime unpacked by the Dockerfile's own extract_ort.py, the baked
# config, policies, prompts and model at the image's paths, uid 10001, a read-only root with
# writable /var/lib/edge-gateway, /var/cache/edge-gateway and /tmp, listening on 0.0.0.0:8080 in
# a network namespace of its own (nothing outside can reach it). Then it probes the image's
# HEALTHCHECK script and the API (keys, scopes, a completion, a baked prompt, metrics), checks
# what the gateway wrote (review database, graph cache, audit log and its chain), and signs a
# package copy at test time (`model keygen`, `model sign`) to run `model verify` as the chart's
# init container does, on it and on a tampered copy. It does NOT build the image (no Docker
# engine here): the build stages are covered only by hadolint and by reading.
#
# usage: deploy/smoke_image_layout.sh EDGE_GATEWAY_BIN ORT_WHEEL
# exit: 0 passed, 1 failed, 77 could not run here (needs root for mount/network namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
MODEL_NAME=edge-tiny-genai
API_KEY=smoke-inference-key-0123456789
ADMIN_KEY=smoke-admin-key-0123456789abc
AUDIT_KEY=smoke-audit-key-0123456789abcd
UID_GW=10001

if [[ "${1:-}" == "--inside" ]]; then
    inside=1
    work=$2
    bin=$3
else
    inside=0
    bin=${1:?usage: smoke_image_layout.sh EDGE_GATEWAY_BIN ORT_WHEEL}
    wheel=${2:?usage: smoke_image_layout.sh EDGE_GATEWAY_BIN ORT_WHEEL}
fi

if [[ $inside == 0 ]]; then
    if [[ $(id -u) != 0 ]] || ! unshare --mount --net --propagation private true 2>/dev/null; then
        echo "cannot run: needs root and mount/network namespaces (unshare)"
        exit 77
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    python3 deploy/docker/extract_ort.py "$wheel" "$work/ortlib" "$ORT_VERSION" >/dev/null
    bin=$(realpath "$bin")
    rc=0
    unshare --mount --net --propagation private "$0" --inside "$work" "$bin" || rc=$?
    exit "$rc"
fi

# ---- inside the namespaces: build the image's filesystem, then run and probe ----
root="$work/root"
mkdir -p "$root"
mount -t tmpfs -o mode=0755 tmpfs "$root"
for d in bin sbin lib lib64 usr; do
    if [[ -L /$d ]]; then
        ln -s "$(readlink "/$d")" "$root/$d"
    elif [[ -d /$d ]]; then
        mkdir "$root/$d"
        mount --rbind "/$d" "$root/$d"
        mount -o remount,bind,ro "$root/$d"
    fi
done
mkdir -p "$root/etc" "$root/proc" "$root/dev"
for f in ld.so.cache ld.so.conf ld.so.conf.d nsswitch.conf hosts host.conf passwd group; do
    [[ -e /etc/$f ]] && cp -a "/etc/$f" "$root/etc/"
done
# RUN groupadd / useradd of the Dockerfile.
echo "edge:x:${UID_GW}:" >>"$root/etc/group"
echo "edge:x:${UID_GW}:${UID_GW}::/var/lib/edge-gateway:/usr/sbin/nologin" >>"$root/etc/passwd"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"

# COPY lines of the runtime stage.
mount -t tmpfs tmpfs "$root/usr/local/bin"
touch "$root/usr/local/bin/edge-gateway"
mount --bind -o ro "$bin" "$root/usr/local/bin/edge-gateway"
install -m 0755 deploy/docker/healthcheck.sh "$root/usr/local/bin/edge-gateway-healthcheck"
mkdir -p "$root/opt/onnxruntime" "$root/opt/edge-gateway/models/$MODEL_NAME" "$root/etc/edge-gateway"
cp -a "$work/ortlib" "$root/opt/onnxruntime/lib"
mount --bind -o ro "onnx/models/$MODEL_NAME" "$root/opt/edge-gateway/models/$MODEL_NAME"
mkdir -p "$root/opt/edge-gateway/models/all-minilm-l6-v2-int8"
mount --bind -o ro onnx/models/all-minilm-l6-v2-int8 "$root/opt/edge-gateway/models/all-minilm-l6-v2-int8"
install -m 0644 deploy/docker/gateway.yaml "$root/etc/edge-gateway/gateway.yaml"
cp -r policies "$root/etc/edge-gateway/policies"
cp -r prompts "$root/etc/edge-gateway/prompts"
cp -r policies/exemplars "$root/etc/edge-gateway/exemplars"
# Writable volumes (as the chart and compose mount them), then a read-only root.
for d in var/lib/edge-gateway var/cache/edge-gateway tmp; do
    mkdir -p "$root/$d"
done
mount -t tmpfs -o "uid=$UID_GW,gid=$UID_GW,mode=0750" tmpfs "$root/var/lib/edge-gateway"
mount -t tmpfs -o "uid=$UID_GW,gid=$UID_GW,mode=0750" tmpfs "$root/var/cache/edge-gateway"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -o remount,ro "$root"

ip link set lo up

# ENV, USER, WORKDIR and CMD of the image.
in_image() {
    (exec_in_image "$@")
}
# `exec`: started in the background, the process behind $! is the gateway itself.
exec_in_image() {
    exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/var/lib/edge-gateway \
        ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so \
        LD_LIBRARY_PATH=/opt/onnxruntime/lib \
        EDGE_GATEWAY_API_KEY="$API_KEY" EDGE_GATEWAY_ADMIN_KEY="$ADMIN_KEY" \
        EDGE_GATEWAY_AUDIT_KEY="$AUDIT_KEY" \
        chroot --userspec="$UID_GW:$UID_GW" "$root" /bin/bash -c 'cd /var/lib/edge-gateway && exec "$@"' _ "$@"
}

exec_in_image /usr/local/bin/edge-gateway serve --config /etc/edge-gateway/gateway.yaml \
    >"$work/gateway.log" 2>&1 &
gw=$!
stop() { kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; }
trap stop EXIT

failures=0
pass() { echo "    ok   $1"; }
fail() { echo "    FAIL $1"; failures=$((failures + 1)); }
# shellcheck disable=SC2329 # called through expect
fails() { ! "$@" >/dev/null 2>&1; }
# shellcheck disable=SC2329 # called through expect
quiet() { # quiet COMMAND...: its output shown only when it fails
    "$@" >"$work/quiet.out" 2>&1 || { sed 's/^/      | /' "$work/quiet.out"; return 1; }
}
expect() { # expect DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

ready=0
for _ in $(seq 1 120); do
    if ! kill -0 "$gw" 2>/dev/null; then
        break
    fi
    if in_image /usr/local/bin/edge-gateway-healthcheck /readyz 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ $ready != 1 ]]; then
    fail "gateway became ready (HEALTHCHECK /readyz) within 60 s"
    sed 's/^/    | /' "$work/gateway.log" | tail -20
    exit 1
fi
pass "HEALTHCHECK script: /readyz answers 200 once the model is loaded"

# shellcheck disable=SC2329 # called through expect
status() { # status EXPECTED [curl args...]
    local want=$1
    shift
    local got
    got=$(curl -s -o "$work/body" -w '%{http_code}' --max-time 30 "$@")
    [[ $got == "$want" ]] || { echo "      got HTTP $got: $(head -c 300 "$work/body")"; return 1; }
}
base=http://127.0.0.1:8080

expect "HEALTHCHECK script: /healthz" in_image /usr/local/bin/edge-gateway-healthcheck /healthz
expect "HEALTHCHECK script fails on a closed port" \
    fails in_image /usr/local/bin/edge-gateway-healthcheck /healthz 127.0.0.1 9
expect "listens on 0.0.0.0:8080 with keys (not loopback-only)" \
    grep -q '0.0.0.0:8080' "$work/gateway.log"
expect "gateway process runs as uid $UID_GW" \
    grep -Eq "^Uid:[[:space:]]+${UID_GW}[[:space:]]" "/proc/$gw/status"
expect "/v1/models without a key: 401" status 401 "$base/v1/models"
expect "/v1/models with the inference key: 200" \
    status 200 "$base/v1/models" -H "Authorization: Bearer $API_KEY"
expect "served model id is $MODEL_NAME" grep -q "\"$MODEL_NAME\"" "$work/body"
expect "chat completion on the baked model: 200" \
    status 200 "$base/v1/chat/completions" -H "Authorization: Bearer $API_KEY" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL_NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"What happened on line 3?\"}],\"max_tokens\":8}"
expect "completion has a choice" grep -q '"choices"' "$work/body"
expect "chat with a baked prompt (metadata.prompt triage): 200" \
    status 200 "$base/v1/chat/completions" -H "Authorization: Bearer $API_KEY" \
    -H 'content-type: application/json' -D "$work/headers" \
    -d "{\"model\":\"$MODEL_NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"What happened on line 3?\"}],\"max_tokens\":8,\"metadata\":{\"prompt\":\"triage\"}}"
expect "answer names the prompt version (x-edge-prompt-version: triage@1)" \
    grep -qi '^x-edge-prompt-version: triage@1' "$work/headers"
expect "/admin/prompts lists the prompts baked at /etc/edge-gateway/prompts" \
    status 200 "$base/admin/prompts" -H "Authorization: Bearer $ADMIN_KEY"
expect "... maintenance/2.yaml among them" grep -q '/etc/edge-gateway/prompts/maintenance/2.yaml' "$work/body"
expect "/admin with the inference key: 403" \
    status 403 "$base/admin/reviews" -H "Authorization: Bearer $API_KEY"
expect "/admin with the admin key: 200" \
    status 200 "$base/admin/reviews" -H "Authorization: Bearer $ADMIN_KEY"
# shellcheck disable=SC2016 # expanded by the inner bash
expect "/metrics open for scrapers, model info exported" \
    bash -c 'curl -sf --max-time 10 "$1/metrics" | grep -q "^edge_gateway_model_info"' _ "$base"
expect "review database written to /var/lib/edge-gateway" test -s "$root/var/lib/edge-gateway/reviews.db"
# shellcheck disable=SC2016 # expanded by the inner bash
expect "optimized graph cached in /var/cache/edge-gateway" \
    bash -c '[[ -n $(find "$1" -type f | head -1) ]]' _ "$root/var/cache/edge-gateway/ort-optimized"
expect "root filesystem is read-only to the gateway user" \
    fails in_image /usr/bin/touch /etc/edge-gateway/x

# The audit log: on the persistent volume by default, keyed by EDGE_GATEWAY_AUDIT_KEY.
audit_dir="$root/var/lib/edge-gateway/audit"
# shellcheck disable=SC2329 # called through expect
audit_recorded() { # the writer commits in groups: give it a moment
    local _
    for _ in $(seq 1 20); do
        grep -qs '"prompt":"triage@1"' "$audit_dir"/audit-*.jsonl && return 0
        sleep 0.25
    done
    return 1
}
expect "audit log written to /var/lib/edge-gateway/audit, with the prompt's decision" audit_recorded
# shellcheck disable=SC2329 # called through expect
audit_chain_keyed() {
    quiet in_image /usr/local/bin/edge-gateway audit verify --config /etc/edge-gateway/gateway.yaml &&
        grep -q '^audit log OK: .*(keyed)$' "$work/quiet.out"
}
expect "edge-gateway audit verify: the chain is intact and keyed" audit_chain_keyed

# Signed packages: a release key and a signed copy of the model, made now; then the chart's
# init container command, `model verify --pubkey-env`, and a start that requires signatures.
pkg=/tmp/signed/$MODEL_NAME
mkdir -p "$root/tmp/signed"
cp -r "onnx/models/$MODEL_NAME" "$root$pkg"
chown -R "$UID_GW:$UID_GW" "$root/tmp/signed"
expect "model keygen writes a release key pair" \
    quiet in_image /usr/local/bin/edge-gateway model keygen --out /tmp/release
expect "model sign writes manifest.json and manifest.sig" \
    quiet in_image /usr/local/bin/edge-gateway model sign --key /tmp/release.key --version 1.0.0 "$pkg"
release_pub=$(cat "$root/tmp/release.pub" 2>/dev/null || true)
# shellcheck disable=SC2329 # called through expect
with_trusted_key() {
    in_image /usr/bin/env EDGE_GATEWAY_TRUSTED_KEYS="$release_pub" "$@"
}
# shellcheck disable=SC2329 # called through expect
verify_package() {
    with_trusted_key /usr/local/bin/edge-gateway model verify \
        --pubkey-env EDGE_GATEWAY_TRUSTED_KEYS "$pkg" >"$work/verify.out" 2>&1
}
# shellcheck disable=SC2329 # called through expect
verify_names_tampered_file() {
    ! verify_package && grep -q 'tokenizer_config.json' "$work/verify.out"
}
expect "model verify --pubkey-env accepts the signed package" verify_package
expect "check-config with governance.require_signed and the key from EDGE_GATEWAY_TRUSTED_KEYS" \
    quiet with_trusted_key EDGE_GATEWAY__GOVERNANCE__REQUIRE_SIGNED=true EDGE_GATEWAY__MODEL__PATH="$pkg" \
    /usr/local/bin/edge-gateway check-config --config /etc/edge-gateway/gateway.yaml
expect "require_signed refuses the baked (unsigned) model" \
    fails with_trusted_key EDGE_GATEWAY__GOVERNANCE__REQUIRE_SIGNED=true \
    /usr/local/bin/edge-gateway check-config --config /etc/edge-gateway/gateway.yaml
printf ' ' >>"$root$pkg/tokenizer_config.json"
expect "model verify refuses a tampered package, naming the file" verify_names_tampered_file

stop
trap - EXIT
if [[ $failures -gt 0 ]]; then
    sed 's/^/    | /' "$work/gateway.log" | tail -20
    exit 1
fi
exit 0
