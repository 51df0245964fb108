"""The GPU check: one run that answers, on a machine with an NVIDIA GPU, whether acs renders
correctly there and how fast it is against diffusers. With `--device cpu --small` the same
harness runs on a CPU on a small configuration (the test command does this, so the script
itself is tested).

    scripts/gpu-check.sh [--device cuda|cpu] [--small] [--acs PATH] [--out DIR]

(a) parity: the same pairs rendered on the device and on the CPU (float32), latents compared
    (max |difference| over the CPU latents' range); then float16 on the device against the
    CPU's float32 (the figure is reported; its tolerance is stated, not assumed).
(b) determinism: the same manifest built twice on the device gives byte-identical files.
(c) benchmark: acs against diffusers (PyTorch, SDPA, float16 on a GPU, float32 on a CPU) on the
    same aligned pairs (both prompts of a pair from one x_T), DDIM, CFG 7.5, at 1 / 4 / 8
    pairs per batch, and acs in prompt-switch mode (switch_at 0.4); pairs per second and the
    ratio.

Writes DIR/gpu-check.json and DIR/gpu-check.md and prints the table; exits 1 when a check
fails. Needs python with torch, diffusers, transformers and pyarrow; no network, no Rust."""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

# Quiet peers: no download or loading progress bars in the report.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

from bench_runtime import PROMPTS, save_model  # noqa: E402

# Parity targets: float32 on another device within 1e-3 of the output range (the issue's
# target); float16 is measured and reported against this looser bound.
F32_TOLERANCE = 1e-3
F16_TOLERANCE = 5e-2


class Config:
    """What one run renders: the model, the image size, the steps and the pair counts."""

    def __init__(self, small):
        self.small = small
        # parity and determinism: a reduced SD 1.5 topology (its CPU side must stay short)
        self.check_topology = "sd15-small"
        self.check_size = 128 if small else 256
        self.check_steps = 4 if small else 10
        self.check_pairs = 2 if small else 4
        # benchmark: the full SD 1.5 topology at 512 px, 25 steps (small: reduced, 128 px, 4)
        self.bench_topology = "sd15-small" if small else "sd15"
        self.bench_size = 128 if small else 512
        self.bench_steps = 4 if small else 25
        self.batches = (1, 2) if small else (1, 4, 8)
        self.batch_rounds = 2 if small else 3


def write_pairs(path, count):
    with open(path, "w") as f:
        for i in range(count):
            unsafe, safe = PROMPTS[i % len(PROMPTS)]
            f.write(json.dumps({"unsafe_prompt": unsafe, "safe_prompt": safe, "seed": 1000 + i,
                                "category": "violence"}) + "\n")


def write_manifest(path, model, pairs, *, device, dtype, size, steps, batch, mode="shared-latent",
                   store_latents=True):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{model}"\ndevice = "{device}"\ndtype = "{dtype}"\n'
                f'[sampling]\nscheduler = "ddim"\nsteps = {steps}\nguidance_scale = 7.5\n'
                f'height = {size}\nwidth = {size}\nbatch_pairs = {batch}\n'
                f'[alignment]\nmode = "{mode}"\nswitch_at = 0.4\nmax_token_edits = 8\n'
                f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\n'
                f'[output]\nsplits = {{ train = 1.0 }}\nstore_latents = {str(store_latents).lower()}\n')


def build(acs, manifest, out):
    """Runs `acs build --json`; the report."""
    done = subprocess.run([acs, "-q", "build", "--manifest", manifest, "--out", out, "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"acs build {manifest} failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def latents(out):
    """pair_id -> (unsafe, safe) float32 latents of a dataset."""
    import pyarrow.parquet as pq

    rows = {}
    for name in sorted(os.listdir(os.path.join(out, "data"))):
        table = pq.read_table(os.path.join(out, "data", name),
                              columns=["pair_id", "unsafe_latent", "safe_latent"]).to_pylist()
        for row in table:
            rows[row["pair_id"]] = tuple(np.frombuffer(row[k], dtype="<f2").astype(np.float32)
                                         for k in ("unsafe_latent", "safe_latent"))
    return rows


def relative_difference(reference, other):
    """max |other - reference| over the reference's range, over every latent of every pair."""
    if sorted(reference) != sorted(other):
        raise RuntimeError("the two builds hold different pairs")
    worst = 0.0
    for pair_id, ref in reference.items():
        for a, b in zip(ref, other[pair_id]):
            span = float(a.max() - a.min()) or 1.0
            worst = max(worst, float(np.abs(a - b).max()) / span)
    return worst


def tree_digest(folder):
    digests = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def check_parity(acs, model, work, cfg, device):
    """(a): device float32 and float16 against CPU float32."""
    pairs = os.path.join(work, "parity.jsonl")
    write_pairs(pairs, cfg.check_pairs)
    results = {}
    common = dict(size=cfg.check_size, steps=cfg.check_steps, batch=cfg.check_pairs)
    runs = [("cpu-f32", "cpu", "f32"), ("device-f32", device, "f32")]
    if device != "cpu":
        runs.append(("device-f16", device, "f16"))
    built = {}
    for name, dev, dtype in runs:
        manifest = os.path.join(work, f"{name}.toml")
        write_manifest(manifest, model, pairs, device=dev, dtype=dtype, **common)
        out = os.path.join(work, name)
        build(acs, manifest, out)
        built[name] = latents(out)
    results["f32"] = relative_difference(built["cpu-f32"], built["device-f32"])
    if "device-f16" in built:
        results["f16"] = relative_difference(built["cpu-f32"], built["device-f16"])
    return results


def check_determinism(acs, model, work, cfg, device):
    """(b): two builds of one manifest on the device, file for file."""
    pairs = os.path.join(work, "replay.jsonl")
    write_pairs(pairs, cfg.check_pairs)
    manifest = os.path.join(work, "replay.toml")
    dtype = "f16" if device != "cpu" else "f32"
    write_manifest(manifest, model, pairs, device=device, dtype=dtype, size=cfg.check_size,
                   steps=cfg.check_steps, batch=2)
    first, second = os.path.join(work, "replay-1"), os.path.join(work, "replay-2")
    build(acs, manifest, first)
    build(acs, manifest, second)
    a, b = tree_digest(first), tree_digest(second)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def bench_acs(acs, model, work, cfg, device, batch, mode):
    pairs = os.path.join(work, f"bench-{batch}-{mode}.jsonl")
    count = batch * cfg.batch_rounds
    write_pairs(pairs, count)
    manifest = os.path.join(work, f"bench-{batch}-{mode}.toml")
    dtype = "f16" if device != "cpu" else "f32"
    write_manifest(manifest, model, pairs, device=device, dtype=dtype, size=cfg.bench_size,
                   steps=cfg.bench_steps, batch=batch, mode=mode, store_latents=False)
    report = build(acs, manifest, os.path.join(work, f"bench-{batch}-{mode}"))
    return {"pairs": count, "seconds": report["render_seconds"],
            "pairs_per_second": count / report["render_seconds"],
            "render_idle_share": report["render_idle_share"]}


def bench_diffusers(model, cfg, device, batch):
    import torch
    from diffusers import StableDiffusionPipeline

    dtype = torch.float16 if device != "cpu" else torch.float32
    torch_device = "cuda" if device.startswith("cuda") else "cpu"
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=dtype).to(torch_device)
    pipe.set_progress_bar_config(disable=True)
    latent = cfg.bench_size // 8

    def render(first, count):
        prompts, x_ts = [], []
        for i in range(first, first + count):
            unsafe, safe = PROMPTS[i % len(PROMPTS)]
            x_t = torch.randn([1, 4, latent, latent], generator=torch.Generator("cpu").manual_seed(1000 + i))
            prompts += [unsafe, safe]
            x_ts += [x_t, x_t]
        with torch.no_grad():
            pipe(prompt=prompts, num_inference_steps=cfg.bench_steps, guidance_scale=7.5,
                 height=cfg.bench_size, width=cfg.bench_size,
                 latents=torch.cat(x_ts).to(torch_device, dtype), output_type="pil")

    render(0, batch)  # warm-up: kernels, allocator
    if torch_device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    count = batch * cfg.batch_rounds
    for first in range(0, count, batch):
        render(first, batch)
    if torch_device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del pipe
    return {"pairs": count, "seconds": seconds, "pairs_per_second": count / seconds}


def machine(device):
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} threads"


def report_lines(result):
    cfg = result["config"]
    lines = [
        f"machine: {result['machine']}; torch {result['torch']}, diffusers {result['diffusers']}",
        f"checks: {cfg['check_topology']} topology, {cfg['check_size']} px, {cfg['check_steps']} DDIM steps",
        f"(a) parity, max |device - cpu| / range of the cpu latents: f32 {result['parity']['f32']:.2e} "
        f"(limit {F32_TOLERANCE:g})"
        + (f", f16 {result['parity']['f16']:.2e} (limit {F16_TOLERANCE:g})" if "f16" in result["parity"] else ""),
        "(b) determinism: " + ("identical files" if not result["determinism"] else
                               f"DIFFERENT: {', '.join(result['determinism'])}"),
        f"(c) benchmark: {cfg['bench_topology']} topology, {cfg['bench_size']} px, {cfg['bench_steps']} DDIM "
        f"steps, CFG 7.5, {result['dtype']}",
        "",
        "| pairs per batch | mode | acs pairs/s | diffusers pairs/s | acs / diffusers | render loop idle |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in result["benchmark"]:
        theirs = row.get("diffusers")
        ours = row["acs"]
        lines.append(
            f"| {row['batch']} | {row['mode']} | {ours['pairs_per_second']:.3f} | "
            + (f"{theirs['pairs_per_second']:.3f} | {ours['pairs_per_second'] / theirs['pairs_per_second']:.2f}"
               if theirs else "- | -")
            + f" | {100 * (ours['render_idle_share'] or 0):.1f} % |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a small configuration (minutes on a CPU)")
    parser.add_argument("--acs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds after which the remaining benchmark rows are skipped")
    args = parser.parse_args()
    import diffusers
    import torch

    started = time.perf_counter()
    cfg = Config(args.small)
    device = args.device
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([args.acs, "-q", "model", "init-tiny", os.path.join(work, "tiny")], check=True)
        tokenizer = os.path.join(work, "tiny", "tokenizer")
        check_model = os.path.join(work, "check-model")
        save_model(check_model, cfg.check_topology, tokenizer)
        result = {
            "machine": machine(device), "device": device, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "config": vars(cfg),
            "dtype": "float16" if device != "cpu" else "float32",
            "date": time.strftime("%Y-%m-%d"),
        }
        result["parity"] = check_parity(args.acs, check_model, work, cfg, device)
        result["determinism"] = check_determinism(args.acs, check_model, work, cfg, device)
        bench_model = check_model
        if cfg.bench_topology != cfg.check_topology:
            bench_model = os.path.join(work, "bench-model")
            save_model(bench_model, cfg.bench_topology, tokenizer)
        rows = []
        plan = [(b, "shared-latent") for b in cfg.batches] + [(cfg.batches[-1], "prompt-switch")]
        for batch, mode in plan:
            if time.perf_counter() - started > args.budget:
                rows.append({"batch": batch, "mode": mode, "skipped": "time budget"})
                continue
            row = {"batch": batch, "mode": mode,
                   "acs": bench_acs(args.acs, bench_model, work, cfg, device, batch, mode)}
            if mode == "shared-latent":
                row["diffusers"] = bench_diffusers(bench_model, cfg, device, batch)
            rows.append(row)
        result["benchmark"] = [r for r in rows if "acs" in r]
        result["skipped"] = [r for r in rows if "skipped" in r]
    result["seconds"] = time.perf_counter() - started
    lines = report_lines(result)
    with open(os.path.join(args.out, "gpu-check.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, "gpu-check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    failures = []
    if result["parity"]["f32"] > F32_TOLERANCE:
        failures.append(f"f32 parity {result['parity']['f32']:.2e} > {F32_TOLERANCE}")
    if result["parity"].get("f16", 0.0) > F16_TOLERANCE:
        failures.append(f"f16 parity {result['parity']['f16']:.2e} > {F16_TOLERANCE}")
    if result["determinism"]:
        failures.append("two builds of one manifest differ")
    if not result["benchmark"]:
        failures.append("no benchmark row ran")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
