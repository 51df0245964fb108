"""What the training outputs cost: acs builds the same pairs with and without counterfactual
trajectory targets (and change masks), in one run, and prints the extra render time and the
extra bytes per pair. A benchmark, not a test.

    scripts/bench-training.sh [--model tiny|sd15-small|sd15-medium|sd15] [--size PX] [--steps N]
                              [--record 5,12,20] [--pairs N] [--batch-pairs N] [--repeats N]

`tiny` is acs's embedded model (64 px); the others are the SD 1.5 topology with random weights
saved by diffusers (scripts/bench_runtime.py). Both builds render the same pairs (DDIM, CFG 7.5,
float32); the runs alternate, and the median render time of each side is reported."""

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from bench_runtime import PROMPTS, TOPOLOGIES, save_model  # noqa: E402

TRAINING_COLUMNS = ["trajectory_steps", "trajectory_timesteps", "trajectory_latents",
                    "trajectory_eps_unsafe", "trajectory_eps_safe"]
MASK_COLUMNS = ["change_mask", "change_mask_latent"]


def manifest(work, model_dir, args, output):
    pairs = os.path.join(work, "pairs.jsonl")
    with open(pairs, "w") as f:
        for i in range(args.pairs):
            unsafe, safe = PROMPTS[i % len(PROMPTS)]
            f.write(json.dumps({"unsafe_prompt": unsafe, "safe_prompt": safe, "seed": 1000 + i}) + "\n")
    model = f'[model]\npath = "{model_dir}"\n' if model_dir else ""
    return (f'{model}[sampling]\nscheduler = "ddim"\nsteps = {args.steps}\nguidance_scale = 7.5\n'
            f'height = {args.size}\nwidth = {args.size}\nbatch_pairs = {args.batch_pairs}\n'
            f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\ncategory = "violence"\n'
            f'[output]\nsplits = {{ train = 1.0 }}\n{output}')


def build(acs, work, name, text, threads):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    out = os.path.join(work, name)
    subprocess.run(["rm", "-rf", out], check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), ACS_HOME=os.path.join(work, "home"))
    done = subprocess.run([acs, "-q", "build", "--json", "--manifest", path, "--out", out],
                          check=True, capture_output=True, text=True, env=env)
    report = json.loads(done.stdout)
    return report, out


def column_bytes(out, columns):
    table = pq.read_table(glob.glob(os.path.join(out, "data", "*.parquet")))
    total = 0
    for name in columns:
        for value in table.column(name).to_pylist():
            if isinstance(value, dict):
                total += len(value["bytes"] or b"")
            elif isinstance(value, (bytes, list)):
                total += len(value) * (4 if isinstance(value, list) else 1)
    return total / table.num_rows, table.num_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acs", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--model", choices=["tiny"] + sorted(TOPOLOGIES), default="tiny")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--record", default="5,12,20")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batch-pairs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    args.size = args.size or (64 if args.model == "tiny" else 256)
    steps = [int(s) for s in args.record.split(",") if s]
    with tempfile.TemporaryDirectory() as work:
        model_dir = None
        if args.model != "tiny":
            model_dir = os.path.join(work, "model")
            save_model(model_dir, args.model, args.tokenizer)
        plain = manifest(work, model_dir, args, "")
        recorded = manifest(work, model_dir, args, f"trajectory_steps = {steps}\nmasks = true\n")
        times = {"plain": [], "recorded": []}
        outs = {}
        for _ in range(args.repeats):
            for name, text in (("plain", plain), ("recorded", recorded)):
                report, outs[name] = build(args.acs, work, name, text, args.threads)
                times[name].append(report["render_seconds"])
        plain_s, rec_s = (statistics.median(times[k]) for k in ("plain", "recorded"))
        trajectory_bytes, rows = column_bytes(outs["recorded"], TRAINING_COLUMNS)
        mask_bytes, _ = column_bytes(outs["recorded"], MASK_COLUMNS)
        shard = lambda name: sum(os.path.getsize(p) for p in glob.glob(os.path.join(outs[name], "data", "*")))
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
              f"model {args.model}, {args.size} px, DDIM {args.steps} steps, CFG 7.5, {rows} pairs, "
              f"batch {args.batch_pairs}; recorded steps {steps}, masks on; {args.repeats} runs each")
        print(f"render, median: plain {plain_s:.2f} s, recorded {rec_s:.2f} s: "
              f"+{100 * (rec_s / plain_s - 1):.1f} % "
              f"(per pair +{(rec_s - plain_s) / rows:.3f} s); all runs {json.dumps(times)}")
        print(f"bytes per pair: trajectory columns {trajectory_bytes:.0f}, mask columns {mask_bytes:.0f}; "
              f"shards {shard('plain') / rows:.0f} -> {shard('recorded') / rows:.0f} per pair")


if __name__ == "__main__":
    main()
