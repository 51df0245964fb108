#!/usr/bin/env bash
# Live fuzzing (opt-in; `scripts/test.sh` only replays the committed corpora, on stable Rust):
#
#     scripts/fuzz.sh [SECONDS] [TARGET...]
#
# runs each cargo-fuzz target (default: all of `cargo fuzz list`) for SECONDS (default 60)
# from its committed corpus `fuzz/corpus/TARGET`, growing a scratch copy, and fails listing the
# targets that found a crash, a hang or a runaway allocation (libFuzzer's input is kept under
# fuzz/artifacts/TARGET/). cargo-fuzz needs the nightly toolchain; both are installed when
# missing. Use the same CARGO_TARGET_DIR as the rest of the project (docs/fuzzing.md); the first
# nightly build compiles every dependency again.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

known="$(cargo +nightly fuzz list)"
if [ $# -gt 0 ]; then
    targets=("$@")
    for target in "${targets[@]}"; do
        if ! grep -qx "$target" <<<"$known"; then
            echo "fuzz: unknown target \`$target\` (known: $(tr '\n' ' ' <<<"$known"))" >&2
            exit 2
        fi
    done
else
    mapfile -t targets <<<"$known"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    echo "fuzz: $target for ${seconds} s"
    if cargo +nightly fuzz run --sanitizer none "$target" "$scratch/$target" \
        "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=30 >"$log" 2>&1; then
        echo "fuzz: $target: $(grep -o 'exec/s: [0-9]*' "$log" | tail -n 1), $(grep -o 'cov: [0-9]*' "$log" | tail -n 1), no finding"
    else
        tail -n 60 "$log"
        echo "fuzz: $target FAILED (input under fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]}" >&2
    exit 1
fi
