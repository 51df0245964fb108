#!/usr/bin/env bash
# Regenerates the smoke build's committed sha256 lists, one per CPU kernel path
# (tests/data/smoke-build.<path>.sha256, checked by tests/e2e/smoke_hashes.rs): builds
# manifests/smoke.toml on every path this CPU runs and writes each list. Run it on a CPU with
# AVX-512 so that every list is written; on another it says which lists it left as they were.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/acs/target}"
cargo build --release --bin acs
acs="$CARGO_TARGET_DIR/release/acs"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for path in cpu-generic cpu-avx2 cpu-avx512; do
    out="$scratch/$path"
    if ! ACS_KERNEL_PATH="$path" ACS_HOME="$scratch/home" "$acs" -q build \
        --manifest manifests/smoke.toml --out "$out" > /dev/null 2> "$scratch/err"; then
        if grep -q 'needs a CPU with' "$scratch/err"; then
            echo "smoke-hashes: $path: this CPU cannot run it; tests/data/smoke-build.$path.sha256 left as it was" >&2
            continue
        fi
        cat "$scratch/err" >&2
        exit 1
    fi
    (cd "$out" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
        > "tests/data/smoke-build.$path.sha256"
    echo "smoke-hashes: wrote tests/data/smoke-build.$path.sha256"
done
