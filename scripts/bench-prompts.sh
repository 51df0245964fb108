#!/usr/bin/env bash
# Benchmark: a generated 10,000-row I2P-shaped CSV through sources, text hygiene, lexicon
# rewriting and the CLIP-token alignment checks (`acs build --dry-run`, no rendering).
# Usage: scripts/bench-prompts.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-10000}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Rows cycle through samples/i2p-sample.csv with a row number appended to each prompt, so every
# row is a distinct prompt of the same shape.
python3 - "$rows" "$scratch/i2p.csv" <<'PY'
import csv, sys
rows, out = int(sys.argv[1]), sys.argv[2]
with open("samples/i2p-sample.csv", newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    sample = list(reader)
with open(out, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for i in range(rows):
        row = list(sample[i % len(sample)])
        row[0] = str(i)
        row[1] = f"{row[1]}, variation {i}"
        writer.writerow(row)
PY
cat > "$scratch/bench.toml" <<TOML
[[sources]]
kind = "i2p-csv"
path = "i2p.csv"
TOML
start=$(date +%s%N)
ACS_HOME="$scratch/home" "$target/release/acs" build --manifest "$scratch/bench.toml" \
    --out "$scratch/out" --dry-run 2> /dev/null | grep -v "^  render"
end=$(date +%s%N)
ns=$((end - start))
printf '%d rows: %d.%03d s wall (including the first use of the tiny model: its tokenizer and fingerprint)\n' \
    "$rows" $((ns / 1000000000)) $((ns / 1000000 % 1000))
