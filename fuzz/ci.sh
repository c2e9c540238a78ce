#!/usr/bin/env bash
# The short fuzz run of CI: builds every target of fuzz/ and runs each for
# $WEFT_FUZZ_SECONDS (default 20) over its committed corpus and regression
# inputs. Fails on the first crash, naming the input that caused it.
#
#   fuzz/ci.sh                      # all targets
#   fuzz/ci.sh detect policy_yaml   # some
#
# Builds are cached outside the clone in $WEFT_FUZZ_TARGET_DIR (default
# /var/cache/weft/fuzz-target). New corpus entries found here go to a
# temporary directory, never into the committed corpus.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
seconds=${WEFT_FUZZ_SECONDS:-20}
export CARGO_TARGET_DIR=${WEFT_FUZZ_TARGET_DIR:-/var/cache/weft/fuzz-target}
export CARGO_INCREMENTAL=0

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: the nightly toolchain is missing; install it with: rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: cargo-fuzz is missing; installing it (cargo install --locked cargo-fuzz)" >&2
    cargo install --locked cargo-fuzz
fi

cd "$fuzz_dir/.."
# No sanitizer: every crate of ours forbids `unsafe`, so AddressSanitizer
# would only slow the run; panics, overflow checks and libFuzzer's limits
# (time per input, memory) are what find bugs here. Debug assertions and
# overflow checks are on in fuzz/Cargo.toml's release profile.
# Development builds (--dev): a CI run is 20 s a target, where an
# optimized build's faster inputs matter less than its build time (a cold
# release build of every target took 34 min here, -Ccodegen-units=1); the
# long runs of fuzz/README.md use the release profile.
fuzz() { # fuzz build|run ARGS...
    cargo +nightly fuzz "$1" --fuzz-dir fuzz --sanitizer none --dev "${@:2}"
}
# `cargo fmt --all` skips this workspace; check its files here.
rustfmt --edition 2024 --check fuzz/fuzz_targets/*.rs
echo "fuzz/ci.sh: building the fuzz targets into $CARGO_TARGET_DIR"
fuzz build

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t/new" "$work/$t/artifacts"
    inputs=("$work/$t/new")
    for d in "fuzz/corpus/$t" "fuzz/regressions/$t"; do
        [ -d "$d" ] && inputs+=("$d")
    done
    echo "fuzz/ci.sh: $t for ${seconds}s"
    if ! fuzz run "$t" "${inputs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 >"$work/$t/log" 2>&1; then
        grep -v '^WARNING' "$work/$t/log" | grep -E -A3 'panicked|ERROR|SUMMARY|Test unit written|error' | head -30 >&2 ||
            tail -20 "$work/$t/log" >&2
        for a in "$work/$t/artifacts"/*; do
            [ -e "$a" ] || continue
            mkdir -p "fuzz/artifacts/$t"
            cp "$a" "fuzz/artifacts/$t/"
            echo "fuzz/ci.sh: $t crashed on fuzz/artifacts/$t/$(basename "$a"); reproduce: cargo +nightly fuzz run --fuzz-dir fuzz -s none $t fuzz/artifacts/$t/$(basename "$a")" >&2
        done
        failed+=("$t")
        continue
    fi
    grep -E '^stat::number_of_executed_units' "$work/$t/log" | sed "s/^/fuzz\/ci.sh: $t: /" || true
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/ci.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/ci.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
