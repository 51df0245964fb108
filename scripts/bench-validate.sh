#!/usr/bin/env bash
# Benchmark: `acs validate` against the same checks written as a typical Python script
# (scripts/bench_validate.py: pyarrow + Pillow + scikit-image, one process, then two) on a
# synthetic dataset of PAIRS pairs of SIZE x SIZE (no detector), same machine, one run; prints
# the wall times and the ratios. The dataset is generated once by the synthetic_dataset
# example and cached (ACS_BENCH_DIR, default ~/.cache/acs/bench).
#
#   scripts/bench-validate.sh [PAIRS] [SIZE]        (default: 1000 512)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${1:-1000}"
size="${2:-512}"
venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs --example synthetic_dataset

cache="${ACS_BENCH_DIR:-$HOME/.cache/acs/bench}"
data="$cache/synthetic-$pairs-$size"
if [ ! -f "$data/README.md" ]; then
    rm -rf "$data" "$data.partial"
    mkdir -p "$cache"
    "$target/release/examples/synthetic_dataset" --pairs "$pairs" --size "$size" \
        --out "$data.partial" 2> /dev/null
    mv "$data.partial" "$data"
fi
echo "dataset: $data ($(du -sh "$data/data" | cut -f1) in $(ls "$data/data" | wc -l) shards)"
# Both sides read the shards from the page cache.
cat "$data"/data/*.parquet > /dev/null

py() { "$venv/bin/python" -W ignore "$@"; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Wall and CPU (user + system) seconds; the CPU figures matter when other work shares the
# machine.
TIMEFORMAT='%R %U %S'
{ time "$target/release/acs" validate "$data" > /dev/null; } 2> "$scratch/acs.time"
read -r wall user sys < <(tail -n 1 "$scratch/acs.time")
acs=$(py -c "print(round($wall, 2))")
acs_cpu=$(py -c "print(round($user + $sys, 2))")
echo "acs validate ($(nproc) threads): $acs s wall, $acs_cpu s CPU"

figures() {
    py -c 'import json, sys; r = json.load(open(sys.argv[1])); print(round(r["seconds"], 2), round(r["cpu_seconds"], 2))' "$1"
}
py scripts/bench_validate.py "$data" --json > "$scratch/py1.json"
read -r py1 py1_cpu < <(figures "$scratch/py1.json")
echo "python, 1 process: $py1 s wall, $py1_cpu s CPU"
py scripts/bench_validate.py "$data" --json --processes 2 > "$scratch/py2.json"
read -r py2 py2_cpu < <(figures "$scratch/py2.json")
echo "python, 2 processes: $py2 s wall, $py2_cpu s CPU"
py -c "print(f'wall time: python (1 process) / acs {$py1 / $acs:.1f}x, python (2 processes) / acs {$py2 / $acs:.1f}x')"
py -c "print(f'CPU time: python (1 process) / acs {$py1_cpu / $acs_cpu:.1f}x, python (2 processes) / acs {$py2_cpu / $acs_cpu:.1f}x')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
