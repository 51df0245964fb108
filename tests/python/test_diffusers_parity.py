"""Whole aligned pairs against diffusers: the smoke dataset's rows re-rendered by diffusers'
StableDiffusionPipeline (DDIM, CFG) from the same tiny model folder, the same prompts and the
same x_T must give the same final latents and images.

Environment (set by scripts/test.sh): ACS_SMOKE_DIR (the dataset), ACS_TINY_DIR (the embedded
tiny model as acs materialised it, in diffusers layout)."""

import glob
import io
import os
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import required_env

DATASET = required_env("ACS_SMOKE_DIR")
TINY = required_env("ACS_TINY_DIR")
ACS = required_env("ACS_BIN")

PAIRS = (
    '{"unsafe_prompt": "a bloody knife on a table", "safe_prompt": "a clean knife on a table", "seed": 7}\n'
    '{"unsafe_prompt": "a nude figure in a garden", "safe_prompt": "a clothed figure in a garden", "seed": 2024}\n'
)


def acs_build(tmp_path, model_dir, scheduler="ddim", steps=10):
    """Builds the two PAIRS with acs from `model_dir`; returns the rows."""
    import subprocess

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(PAIRS)
    manifest = tmp_path / "build.toml"
    manifest.write_text(
        f'[model]\npath = "{model_dir}"\n[sampling]\nscheduler = "{scheduler}"\nsteps = {steps}\n'
        f'guidance_scale = 7.5\nheight = 64\nwidth = 64\n'
        f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\ncategory = "violence"\n'
        f'[output]\nsplits = {{ train = 1.0 }}\n'
    )
    out = tmp_path / "out"
    subprocess.run([ACS, "build", "--manifest", str(manifest), "--out", str(out)], check=True, capture_output=True)
    rows = pq.read_table(sorted(glob.glob(str(out / "data" / "*.parquet")))).to_pylist()
    assert len(rows) == 2
    return rows


def stored_latent(row, side):
    return np.frombuffer(row[f"{side}_latent"], dtype="<f2").astype(np.float32).reshape(row["latent_shape"])


def pair_latents(pipe, row):
    """diffusers' final latents for both prompts of a row, from the row's x_T."""
    x_t = torch.randn([1, *row["latent_shape"]], generator=torch.Generator("cpu").manual_seed(row["seed"]))
    return pipe(
        prompt=[row["unsafe_prompt"], row["safe_prompt"]], negative_prompt=[row["negative_prompt"]] * 2,
        num_inference_steps=row["steps"], guidance_scale=row["guidance_scale"], height=row["height"],
        width=row["width"], latents=x_t.repeat(2, 1, 1, 1), output_type="latent",
    ).images.numpy()


def worst_pair_error(pipe, rows):
    """Largest relative latent difference between acs's rows and diffusers' pairs."""
    worst = 0.0
    for row in rows:
        theirs = pair_latents(pipe, row)
        for i, side in enumerate(("unsafe", "safe")):
            worst = max(worst, relative_error(theirs[i], stored_latent(row, side)))
    return worst


def relative_error(theirs, ours):
    return float(np.abs(theirs - ours).max()) / float(np.abs(theirs).max())

# Stored latents are float16 (|x| up to ~80 here, where one f16 step is 0.0625, i.e. up to
# ~5e-4 of the range from rounding alone); 25 steps with guidance 7.5 amplify float32 differences
# between candle and torch on top. Measured 2026-11-28: 1.46e-3 of the range (tiny model, DDIM),
# 2.03e-3 (reduced SD 1.5 topology, 10 DDIM steps). Tolerances are relative to the range.
LATENT_TOLERANCE = 3e-3
# Image pixels may differ by rounding of the last 8-bit level after the VAE.
PIXEL_TOLERANCE = 2


@pytest.fixture(scope="module")
def pipeline():
    warnings.filterwarnings("ignore")
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None, requires_safety_checker=False)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pairs_match_diffusers(pipeline):
    rows = pq.read_table(sorted(glob.glob(os.path.join(DATASET, "data", "*.parquet")))).to_pylist()
    assert len(rows) >= 4
    worst_latent = 0.0
    worst_pixel = 0
    for row in rows[:4]:
        latents = pair_latents(pipeline, row)
        images = pipeline.vae.decode(torch.from_numpy(latents) / pipeline.vae.config.scaling_factor).sample
        images = ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).detach().numpy())
        for i, side in enumerate(("unsafe", "safe")):
            worst_latent = max(worst_latent, relative_error(latents[i], stored_latent(row, side)))
            pixels = np.asarray(Image.open(io.BytesIO(row[f"{side}_image"]["bytes"])).convert("RGB")).astype(int)
            theirs = (images[i] * 255).round().astype(int)
            worst_pixel = max(worst_pixel, int(np.abs(pixels - theirs).max()))
    print(f"max |latent diff| / range = {worst_latent:.2e}, max pixel diff = {worst_pixel}")
    assert worst_latent <= LATENT_TOLERANCE
    assert worst_pixel <= PIXEL_TOLERANCE



def test_euler_ancestral_pairs_match_diffusers_with_shared_noise(pipeline, tmp_path):
    """Both branches of a pair take the same ancestral noise: diffusers, run on each prompt alone
    with generator=Generator("cpu").manual_seed(seed) (x_T first, then one draw per step), must
    reproduce each branch."""
    from diffusers import EulerAncestralDiscreteScheduler

    rows = acs_build(tmp_path, TINY, scheduler="euler-ancestral")
    pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(pipeline.scheduler.config)
    worst = 0.0
    for row in rows:
        for side in ("unsafe", "safe"):
            theirs = pipeline(
                prompt=row[f"{side}_prompt"], negative_prompt=row["negative_prompt"],
                num_inference_steps=row["steps"], guidance_scale=row["guidance_scale"],
                height=row["height"], width=row["width"],
                generator=torch.Generator("cpu").manual_seed(row["seed"]), output_type="latent",
            ).images.numpy()[0]
            worst = max(worst, relative_error(theirs, stored_latent(row, side)))
    print(f"euler-ancestral: max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE


@pytest.mark.parametrize("scheduler,karras", [("dpmpp-2m", False), ("dpmpp-2m-karras", True)])
def test_dpm_solver_pairs_match_diffusers(pipeline, tmp_path, scheduler, karras):
    """DPM-Solver++ 2M (and its Karras-sigma variant) against diffusers'
    DPMSolverMultistepScheduler with its defaults on the model's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler

    rows = acs_build(tmp_path, TINY, scheduler=scheduler)
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config, use_karras_sigmas=karras)
    worst = worst_pair_error(pipeline, rows)
    print(f"{scheduler}: max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE


def save_reduced_sd15(path, tokenizer_dir):
    """A reduced-channel copy of the SD 1.5 topology (four down blocks, 77-token context, the full
    49,408-token vocabulary) with random weights, saved in diffusers layout by diffusers."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return pipe


def test_reduced_sd15_topology_saved_by_diffusers(tmp_path):
    """acs loads a folder diffusers wrote (transformers 5 text encoder keys, tokenizer.json) and
    renders the same pairs as diffusers."""
    model_dir = tmp_path / "sd15-reduced"
    pipe = save_reduced_sd15(model_dir, os.path.join(TINY, "tokenizer"))
    pipe.set_progress_bar_config(disable=True)
    rows = acs_build(tmp_path, model_dir)
    worst = worst_pair_error(pipe, rows)
    print(f"reduced SD 1.5 topology: max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE
