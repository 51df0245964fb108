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
from model_factory import save_reduced

DATASET = required_env("ACS_SMOKE_DIR")
TINY = required_env("ACS_TINY_DIR")
ACS = required_env("ACS_BIN")

PAIRS = (
    '{"unsafe_prompt": "a bloody knife on a table", "safe_prompt": "a clean knife on a table", "seed": 7}\n'
    '{"unsafe_prompt": "a nude figure in a garden", "safe_prompt": "a clothed figure in a garden", "seed": 2024, '
    '"category": "sexual"}\n'
)


def acs_build(tmp_path, model_dir, scheduler="ddim", steps=10, guidance=7.5, size=64):
    """Builds the two PAIRS with acs from `model_dir`; returns the rows."""
    import subprocess

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(PAIRS)
    manifest = tmp_path / "build.toml"
    manifest.write_text(
        f'[model]\npath = "{model_dir}"\n[sampling]\nscheduler = "{scheduler}"\nsteps = {steps}\n'
        f'guidance_scale = {guidance}\nheight = {size}\nwidth = {size}\n'
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

# Stored latents are float16 (up to ~5e-4 of the range from rounding alone). Measured
# 2026-11-28 after the runtime's own UNet (exact GELU in GEGLU, as diffusers): 3.4e-4 to 3.8e-4
# of the range for every model and scheduler here. Tolerances are relative to the range.
LATENT_TOLERANCE = 1e-3
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


@pytest.mark.parametrize("kind,scheduler,steps,guidance", [
    ("sd15", "ddim", 10, 7.5),
    ("sd2-v", "ddim", 10, 7.5),
    ("turbo", "euler", 1, 0.0),
    ("turbo", "euler", 4, 0.0),
])
def test_reduced_topologies_saved_by_diffusers(tmp_path, kind, scheduler, steps, guidance):
    """acs loads folders diffusers wrote (transformers 5 text encoder keys, tokenizer.json) and
    renders the same aligned pairs: SD 1.5 (epsilon, CFG), SD 2.x (v-prediction, CFG) and
    SD-Turbo (Euler, trailing timesteps, 1 and 4 steps without guidance)."""
    model_dir = tmp_path / kind
    pipe = save_reduced(model_dir, os.path.join(TINY, "tokenizer"), kind)
    # 128 px: at 64 px the deepest level of a four-level UNet is 1 x 1 latent cell, where each
    # group norm normalises two values; random weights then make the pair ill-conditioned and
    # guidance amplifies float32 rounding (measured: SD 2.x topology 6.2e-3 at 64 px, 2.8e-4
    # at 128 px, 3.4e-4 at 64 px without guidance).
    rows = acs_build(tmp_path, model_dir, scheduler=scheduler, steps=steps, guidance=guidance, size=128)
    worst = worst_pair_error(pipe, rows)
    print(f"{kind} ({scheduler}, {steps} steps, guidance {guidance}): max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE
