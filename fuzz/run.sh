#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time and prints the executions per
# target. Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (make fuzz SECONDS=60)
#
# cargo-fuzz passes nightly-only flags to rustc; the machine has a stable toolchain, so
# RUSTC_BOOTSTRAP=1 lets stable accept them. cargo-fuzz itself is installed from crates.io into
# .cache/cargo-fuzz when it is not on PATH. Targets are built without a sanitizer (`-s none`):
# the library has no unsafe code of its own, and libFuzzer's coverage plus Rust's debug
# assertions and overflow checks (on in cargo-fuzz builds) are what find panics, hangs and
# runaway allocations. New inputs go to fuzz/corpus/<target> (git-ignored), crashes to
# fuzz/artifacts/<target>; the committed seeds are in fuzz/seeds/<target>.
set -euo pipefail
cd "$(dirname "$0")"
per_target=${1:-60}
shift || true

export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    export PATH="$PWD/../.cache/cargo-fuzz/bin:$PATH"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into .cache/cargo-fuzz" >&2
        cargo install --locked --quiet --root ../.cache/cargo-fuzz cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none >&2
mkdir -p logs
declare -A execs crashes
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${per_target}s" >&2
    # -timeout: one input taking longer is a finding (a hang); -rss_limit_mb: so is a runaway
    # allocation; -max_len: request bodies and config files far larger than this only repeat
    # structure the fuzzer already explores at this size.
    # Targets whose inputs are a language (Jinja, policy and config YAML) get its words.
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    if cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "${dict[@]}" >"logs/$t.log" 2>&1; then
        crashes[$t]=0
    else
        crashes[$t]=1
        status=1
    fi
    execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    execs[$t]=${execs[$t]:-0}
done

printf '\n%-22s %14s %10s  %s\n' target executions exec/s result
json="{"
sep=""
for t in "${targets[@]}"; do
    rate=$(( ${execs[$t]} / (per_target > 0 ? per_target : 1) ))
    result=ok
    [ "${crashes[$t]}" = 1 ] && result="FAILED (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    printf '%-22s %14s %10s  %s\n' "$t" "${execs[$t]}" "$rate" "$result"
    json+="$sep\"$t\":{\"executions\":${execs[$t]},\"seconds\":$per_target,\"failed\":$([ "${crashes[$t]}" = 1 ] && echo true || echo false)}"
    sep=","
done
json+="}"
summary="logs/summary-$(date +%Y%m%d-%H%M%S).json"
echo "$json" > "$summary"
echo "summary: fuzz/$summary" >&2
exit "$status"
