"""The CPU runtime against diffusers at every model size, in one run: each case times acs and
diffusers side by side on the same random-weight model (saved by diffusers in its layout) and
prints the ratio. A benchmark, not a test.

    scripts/bench-suite.sh [--cases tiny,small,medium,unet,vae] [--threads N]
                           [--kernel-path cpu-avx2]

--kernel-path puts both sides on one CPU code path: acs through ACS_KERNEL_PATH, torch through
ATEN_CPU_CAPABILITY (its own kernels), ONEDNN_MAX_CPU_ISA (its convolutions) and
MKL_ENABLE_INSTRUCTIONS (its matrix products), so an AVX-512 machine measures what a CPU with
only AVX2 + FMA would.

Cases (float32, DDIM, CFG 7.5, both prompts of a pair from one x_T):
  tiny    16 pairs, 20 steps, 128 px, 4 pairs per batch, SD 1.5 topology with 32/64/64/64
          channels: whole processes (start, load, render, write), and the render alone
  small   sd15-small (64/128/256/256), 256 px, 10 steps, 2 pairs, 1 per batch: render
  medium  sd15-medium (160/320/640/640), 256 px, 5 steps, 1 pair: render
  unet    full-size SD 1.5 UNet (859 M parameters), one call at batch 4 (a pair with CFG) on a
          64x64 latent: acs = (3-step build - 1-step build) / 2 of UNet time, diffusers = one
          `pipe.unet` call after a warm-up call
  vae     full-size SD 1.5 VAE decoder, 2 latents of 64x64 (two 512 px images): acs's build
          stage timer, diffusers' `vae.decode`
  load    full-size model: acs's "load model" stage of a build (fingerprint cached after the
          first build) against `StableDiffusionPipeline.from_pretrained`
  pair    full-size SD 1.5, one pair at 512 px, 25 DDIM steps, both branches with guidance,
          decode included: whole processes (acs build with the model's fingerprint cached, a
          diffusers script writing the PNGs), seconds and peak RSS (not in the default cases:
          about 15 minutes on 2 cores)

The full-size model (4 GB) is made once and kept in ~/.cache/acs/bench-models/sd15-full."""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_runtime import PROMPTS, save_model  # noqa: E402

FULL_MODEL = os.path.expanduser("~/.cache/acs/bench-models/sd15-full")

# acs kernel path -> (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS).
TORCH_ISA = {
    "cpu-avx512": ("avx512", "AVX512_CORE", "AVX512"),
    "cpu-avx2": ("avx2", "AVX2", "AVX2"),
    "cpu-generic": ("default", "SSE41", "SSE4_2"),
}


def use_kernel_path(name):
    """Puts this process's torch and every acs run it starts on one code path (before torch is
    imported: ATen reads its capability once)."""
    aten, onednn, mkl = TORCH_ISA[name]
    os.environ.update(ACS_KERNEL_PATH=name, ATEN_CPU_CAPABILITY=aten, ONEDNN_MAX_CPU_ISA=onednn,
                      MKL_ENABLE_INSTRUCTIONS=mkl)


def run_child(command, env):
    """Runs `command`; returns (its stdout, wall seconds, peak RSS in bytes). Fails loudly."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        # wait4, not Popen.wait: the child's own resource usage (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{command[0]} failed ({child.returncode}):\n{err.read()}")
        return out.read(), wall, usage.ru_maxrss * 1024


def build(acs, model_dir, work, name, pairs, steps, size, batch_pairs, threads):
    """Runs `acs build`; returns (whole-process seconds, stage seconds by name)."""
    source = os.path.join(work, f"{name}.jsonl")
    with open(source, "w") as f:
        for i in range(pairs):
            unsafe, safe = PROMPTS[i % len(PROMPTS)]
            f.write(json.dumps({"unsafe_prompt": unsafe, "safe_prompt": safe, "seed": 1000 + i}) + "\n")
    manifest = os.path.join(work, f"{name}.toml")
    with open(manifest, "w") as f:
        f.write(f'[model]\npath = "{model_dir}"\n[sampling]\nscheduler = "ddim"\nsteps = {steps}\n'
                f'guidance_scale = 7.5\nheight = {size}\nwidth = {size}\nbatch_pairs = {batch_pairs}\n'
                f'[[sources]]\nkind = "pairs-jsonl"\npath = "{source}"\ncategory = "violence"\n'
                f'[output]\nsplits = {{ train = 1.0 }}\nstore_latents = false\n')
    out = os.path.join(work, f"{name}-out")
    subprocess.run(["rm", "-rf", out], check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), ACS_HOME=os.path.join(work, "home"))
    stdout, wall, peak = run_child([acs, "-q", "build", "--json", "--manifest", manifest, "--out", out], env)
    report = json.loads(stdout)
    stages = {name: seconds for name, seconds in report["stage_seconds"]}
    stages["render loop"] = report["render_seconds"]
    stages["peak rss"] = peak
    return wall, stages


def stage(stages, prefix):
    return sum(v for k, v in stages.items() if k.startswith(prefix))


DIFFUSERS_RENDER = r'''
import json, sys, time
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
pipe = StableDiffusionPipeline.from_pretrained(args["model"], safety_checker=None, requires_safety_checker=False)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
latent = args["size"] // 8
start = time.perf_counter()
with torch.no_grad():
    for first in range(0, args["pairs"], args["batch_pairs"]):
        prompts, latents = [], []
        for i in range(first, min(first + args["batch_pairs"], args["pairs"])):
            unsafe, safe = args["prompts"][i % len(args["prompts"])]
            x_t = torch.randn([1, 4, latent, latent], generator=torch.Generator("cpu").manual_seed(1000 + i))
            prompts += [unsafe, safe]
            latents += [x_t, x_t]
        images = pipe(prompt=prompts, num_inference_steps=args["steps"], guidance_scale=7.5, height=args["size"],
                      width=args["size"], latents=torch.cat(latents), output_type="pil").images
        for j, image in enumerate(images):
            image.save(f"{args['out']}/{first}-{j}.png")
print(json.dumps({"render": time.perf_counter() - start}))
'''


def diffusers_render(python, model_dir, work, pairs, steps, size, batch_pairs, threads):
    """A whole Python process rendering the pairs with diffusers (PNG files written, as acs
    writes shards); returns (whole-process seconds, render seconds, peak RSS in bytes)."""
    out = os.path.join(work, "diffusers-out")
    os.makedirs(out, exist_ok=True)
    args = dict(model=model_dir, pairs=pairs, steps=steps, size=size, batch_pairs=batch_pairs,
                threads=threads, prompts=PROMPTS, out=out)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    stdout, wall, peak = run_child([python, "-W", "ignore", "-c", DIFFUSERS_RENDER, json.dumps(args)], env)
    return wall, json.loads(stdout.strip().splitlines()[-1])["render"], peak


def diffusers_components(model_dir, threads):
    """One UNet call at batch 4 (after a warm-up) and one VAE decode of 2 latents, 64x64."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    load = time.perf_counter() - start
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn([4, 4, 64, 64], generator=generator)
    context = torch.randn([4, 77, pipe.unet.config.cross_attention_dim], generator=generator)
    with torch.no_grad():
        pipe.unet(latents, 981, encoder_hidden_states=context)
        start = time.perf_counter()
        pipe.unet(latents, 961, encoder_hidden_states=context)
        unet = time.perf_counter() - start
        start = time.perf_counter()
        pipe.vae.decode(latents[:2] / pipe.vae.config.scaling_factor)
        vae = time.perf_counter() - start
    return {"load": load, "unet": unet, "vae": vae}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acs", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--cases", default="tiny,small,medium,unet,vae,load")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--kernel-path", choices=sorted(TORCH_ISA),
                        help="run both sides on this CPU code path (default: each side's best)")
    args = parser.parse_args()
    cases = args.cases.split(",")
    if args.kernel_path:
        use_kernel_path(args.kernel_path)
    import diffusers
    import torch

    rows, peak_rows = [], []
    with tempfile.TemporaryDirectory() as work:
        for case, topology, pairs, steps, size, batch in [
            ("tiny", "sd15-tiny", 16, 20, 128, 4),
            ("small", "sd15-small", 2, 10, 256, 1),
            ("medium", "sd15-medium", 1, 5, 256, 1),
        ]:
            if case not in cases:
                continue
            model_dir = os.path.join(work, topology)
            save_model(model_dir, topology, args.tokenizer)
            ours_wall, ours = build(args.acs, model_dir, work, case, pairs, steps, size, batch, args.threads)
            theirs_wall, theirs_render, _ = diffusers_render(sys.executable, model_dir, work, pairs, steps,
                                                             size, batch, args.threads)
            label = f"{case}: {pairs} pairs, {steps} steps, {size} px, {batch}/batch"
            if case == "tiny":
                rows.append((label + ", whole processes", ours_wall, theirs_wall))
            rows.append((label + ", render", ours["render loop"], theirs_render))
        if any(c in cases for c in ("unet", "vae", "load", "pair")):
            if not os.path.isdir(FULL_MODEL):
                os.makedirs(os.path.dirname(FULL_MODEL), exist_ok=True)
                save_model(FULL_MODEL + ".partial", "sd15", args.tokenizer)
                os.rename(FULL_MODEL + ".partial", FULL_MODEL)
        if any(c in cases for c in ("unet", "vae", "load")):
            _, one = build(args.acs, FULL_MODEL, work, "full1", 1, 1, 512, 1, args.threads)
            _, three = build(args.acs, FULL_MODEL, work, "full3", 1, 3, 512, 1, args.threads)
            theirs = diffusers_components(FULL_MODEL, args.threads)
            if "unet" in cases:
                ours_unet = (stage(three, "render: UNet") - stage(one, "render: UNet")) / 2
                rows.append(("unet: full SD 1.5 UNet, 1 call at batch 4, 64x64", ours_unet, theirs["unet"]))
            if "vae" in cases:
                rows.append(("vae: full SD 1.5 VAE decode, 2 x 512 px", stage(one, "render: VAE"), theirs["vae"]))
            if "load" in cases:
                rows.append(("load: full SD 1.5 (fingerprint cached)", stage(three, "load model"), theirs["load"]))
                rows.append(("load: full SD 1.5 (first build, hashing)", stage(one, "load model"), theirs["load"]))
        if "pair" in cases:
            if not any(c in cases for c in ("unet", "vae", "load")):
                # The model's fingerprint cached first, as for any build after a model's first.
                build(args.acs, FULL_MODEL, work, "full1", 1, 1, 512, 1, args.threads)
            label = "pair: full SD 1.5, 1 pair, 25 DDIM steps, 512 px, CFG, decode"
            ours_wall, ours = build(args.acs, FULL_MODEL, work, "pair", 1, 25, 512, 1, args.threads)
            theirs_wall, theirs_render, theirs_peak = diffusers_render(
                sys.executable, FULL_MODEL, work, 1, 25, 512, 1, args.threads)
            rows.append((label + ", whole processes", ours_wall, theirs_wall))
            rows.append((label + ", render", ours["render loop"], theirs_render))
            peak_rows.append((label, ours["peak rss"], theirs_peak))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads "
          f"each side; torch {torch.__version__}, diffusers {diffusers.__version__}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"kernel path: {args.kernel_path or 'best of each side'} (torch: {torch.backends.cpu.get_cpu_capability()})")
    print(f"| case | acs (s) | diffusers (s) | acs / diffusers |\n|---|---:|---:|---:|")
    for label, ours, theirs in rows:
        print(f"| {label} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")
    if peak_rows:
        print(f"\n| case | acs peak RSS (GiB) | diffusers peak RSS (GiB) | acs / diffusers |\n|---|---:|---:|---:|")
        for label, ours, theirs in peak_rows:
            print(f"| {label} | {ours / 2**30:.2f} | {theirs / 2**30:.2f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
