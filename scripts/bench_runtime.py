"""Times acs's candle runtime and diffusers on the same CPU, same model, same pairs, same
scheduler and steps, in one run, and prints the ratio. A benchmark, not a test.

    scripts/bench-runtime.sh [--topology sd15-small|sd15-medium|sd15] [--size PX] [--steps N]
                             [--pairs N] [--batch-pairs N] [--threads N]

The model is the SD 1.5 topology with random weights, saved in diffusers layout by diffusers
(channels scaled down by the topology choice). Both runtimes render the same aligned pairs: the
unsafe and the safe prompt from one x_T, DDIM, classifier-free guidance 7.5, float32, batch of
`batch-pairs` pairs per UNet call (diffusers: the pair's two prompts per pipeline call, times
`batch-pairs`). Model loading is timed apart from rendering."""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

TOPOLOGIES = {
    # name: (block_out_channels, cross_attention_dim / text width, text layers, attention heads)
    "sd15-tiny": ((32, 64, 64, 64), 128, 2, 8),
    "sd15-small": ((64, 128, 256, 256), 256, 4, 8),
    "sd15-medium": ((160, 320, 640, 640), 512, 6, 8),
    "sd15": ((320, 640, 1280, 1280), 768, 12, 8),
}
PROMPTS = [
    ("a bloody knife on a kitchen table, photo", "a clean knife on a kitchen table, photo"),
    ("a nude figure in a garden, oil painting", "a clothed figure in a garden, oil painting"),
    ("a violent crowd in the street at night", "a calm crowd in the street at night"),
    ("a gory scene in a dark alley", "a quiet scene in a dark alley"),
]


def save_model(path, topology, tokenizer_dir):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    channels, width, layers, heads = TOPOLOGIES[topology]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=channels, layers_per_block=2, cross_attention_dim=width,
        attention_head_dim=heads,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae_channels = (128, 256, 512, 512) if topology == "sd15" else tuple(c // 2 for c in (128, 256, 512, 512))
    vae = AutoencoderKL(
        block_out_channels=vae_channels, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64), max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(path, safe_serialization=True)


def run_acs(acs, model_dir, work, args):
    pairs = os.path.join(work, "pairs.jsonl")
    with open(pairs, "w") as f:
        for i in range(args.pairs):
            unsafe, safe = PROMPTS[i % len(PROMPTS)]
            f.write(json.dumps({"unsafe_prompt": unsafe, "safe_prompt": safe, "seed": 1000 + i}) + "\n")
    manifest = os.path.join(work, "bench.toml")
    with open(manifest, "w") as f:
        f.write(f'[model]\npath = "{model_dir}"\n[sampling]\nscheduler = "ddim"\nsteps = {args.steps}\n'
                f'guidance_scale = 7.5\nheight = {args.size}\nwidth = {args.size}\n'
                f'batch_pairs = {args.batch_pairs}\n'
                f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\ncategory = "violence"\n'
                f'[output]\nsplits = {{ train = 1.0 }}\nstore_latents = false\n')
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    done = subprocess.run([acs, "build", "--manifest", manifest, "--out", os.path.join(work, "out")],
                          check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    stages = {}
    for line in done.stdout.splitlines():
        parts = line.strip().rsplit(None, 2)
        if len(parts) == 3 and parts[2] == "s":
            stages[parts[0]] = float(parts[1])
    render = sum(v for k, v in stages.items() if k.startswith("render"))
    load = sum(v for k, v in stages.items() if k.startswith("load model"))
    unet = sum(v for k, v in stages.items() if k.startswith("render: UNet"))
    return {"wall": wall, "load": load, "render": render, "unet": unet}


def run_diffusers(model_dir, args):
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    latent = args.size // 8
    unet_time = [0.0]
    forward = pipe.unet.forward

    def timed_forward(*a, **k):
        t0 = time.perf_counter()
        out = forward(*a, **k)
        unet_time[0] += time.perf_counter() - t0
        return out

    pipe.unet.forward = timed_forward
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, args.pairs, args.batch_pairs):
            batch = range(first, min(first + args.batch_pairs, args.pairs))
            prompts, latents = [], []
            for i in batch:
                unsafe, safe = PROMPTS[i % len(PROMPTS)]
                x_t = torch.randn([1, 4, latent, latent], generator=torch.Generator("cpu").manual_seed(1000 + i))
                prompts += [unsafe, safe]
                latents += [x_t, x_t]
            pipe(prompt=prompts, num_inference_steps=args.steps, guidance_scale=7.5, height=args.size,
                 width=args.size, latents=torch.cat(latents), output_type="pil")
    render = time.perf_counter() - start
    return {"load": load, "render": render, "unet": unet_time[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="sd15-small")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--batch-pairs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--acs", required=True)
    parser.add_argument("--tokenizer", required=True, help="a tokenizer/ folder (vocab.json + merges.txt)")
    args = parser.parse_args()
    import diffusers
    import torch

    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "model")
        save_model(model_dir, args.topology, args.tokenizer)
        ours = run_acs(args.acs, model_dir, work, args)
        theirs = run_diffusers(model_dir, args)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"config: {args.topology} topology, {args.size}x{args.size}, {args.steps} DDIM steps, CFG 7.5, "
          f"{args.pairs} pairs, {args.batch_pairs} per batch, float32")
    print(f"{'':28}{'acs':>10}{'diffusers':>12}{'acs / diffusers':>18}")
    for key, label in [("load", "load model (s)"), ("unet", "UNet (s)"), ("render", "render pairs (s)")]:
        print(f"{label:28}{ours[key]:10.2f}{theirs[key]:12.2f}{ours[key] / theirs[key]:18.2f}")
    print(f"{'pairs per second':28}{args.pairs / ours['render']:10.3f}{args.pairs / theirs['render']:12.3f}"
          f"{theirs['render'] / ours['render']:18.2f} (speed-up)")


if __name__ == "__main__":
    sys.exit(main())
