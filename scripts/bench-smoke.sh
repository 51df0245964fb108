#!/usr/bin/env bash
# Times the smoke build (embedded tiny model) a few times in fresh folders and prints the wall
# time of each stage as acs reports it. Usage: scripts/bench-smoke.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs
elapsed() { local ns=$(( $(date +%s%N) - $1 )); printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000)); }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# First use materialises the tiny model; time it separately.
start=$(date +%s%N)
ACS_HOME="$scratch/home" "$target/release/acs" model init-tiny "$scratch/tiny" > /dev/null
echo "tiny model generation: $(elapsed "$start") s"
for i in $(seq 1 "$runs"); do
    start=$(date +%s%N)
    ACS_HOME="$scratch/home" "$target/release/acs" build --manifest manifests/smoke.toml \
        --out "$scratch/run$i" 2> /dev/null
    echo "run $i wall: $(elapsed "$start") s"
done
start=$(date +%s%N)
"$target/release/acs" validate "$scratch/run1" > /dev/null
echo "validate wall: $(elapsed "$start") s"
start=$(date +%s%N)
"$target/release/acs" stats "$scratch/run1" > /dev/null
echo "stats wall: $(elapsed "$start") s"
