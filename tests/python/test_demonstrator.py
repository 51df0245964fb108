"""The embedded shapes demonstrator: the committed weights are the ones its training script
recorded, diffusers loads the folder acs materialises and renders the same latents as acs (the
README's main job, DPM-Solver++ 2M, and DDIM), every caption word is one CLIP token, and the
main job's images show most of their prompts.

Environment (set by scripts/test.sh): ACS_SHAPES_DIR (the main job's dataset, manifests/shapes.toml),
ACS_SHAPES_MODEL_DIR (the demonstrator as acs materialised it), ACS_BIN."""

import glob
import hashlib
import io
import json
import os
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import required_env
from test_diffusers_parity import LATENT_TOLERANCE, PIXEL_TOLERANCE, acs_build, relative_error, stored_latent

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ASSETS = os.path.join(ROOT, "acs-builder", "assets", "shapes-sd-v1")
DATASET = required_env("ACS_SHAPES_DIR")
MODEL = required_env("ACS_SHAPES_MODEL_DIR")
sys.path.insert(0, os.path.join(ROOT, "scripts", "demonstrator"))
import scenes  # noqa: E402


def report():
    with open(os.path.join(ASSETS, "training-report.json")) as f:
        return json.load(f)


def rows():
    return pq.read_table(sorted(glob.glob(os.path.join(DATASET, "data", "*.parquet")))).to_pylist()


@pytest.fixture(scope="module")
def pipeline():
    warnings.filterwarnings("ignore")
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_committed_and_materialised_files_are_the_recorded_ones():
    recorded = report()["files"]
    weights = {p: h for p, h in recorded.items() if not p.startswith("tokenizer/") and p != "loss.png"}
    assert any(p.endswith(".safetensors") for p in weights)
    total = 0
    for path, digest in weights.items():
        for folder in (ASSETS, MODEL):
            with open(os.path.join(folder, path), "rb") as f:
                data = f.read()
            assert hashlib.sha256(data).hexdigest() == digest, (folder, path)
        total += len(data)
    assert total <= 25 * 1024 * 1024


def test_configs_are_the_recorded_configs(pipeline):
    configs = report()["configs"]
    for name, component in (("unet", pipeline.unet), ("vae", pipeline.vae)):
        for key, value in configs[name].items():
            got = component.config[key]
            assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
    for key, value in configs["text_encoder"].items():
        assert getattr(pipeline.text_encoder.config, key) == value, key
    assert pipeline.vae.config.scaling_factor == pytest.approx(report()["latents"]["scaling_factor"])


def test_every_caption_word_is_one_clip_token(pipeline):
    for word in scenes.vocabulary():
        assert len(pipeline.tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_the_main_job_renders_the_demonstrators_pairs_as_diffusers_does(pipeline):
    from diffusers import DPMSolverMultistepScheduler

    found = rows()
    assert len(found) == 18
    assert {r["model_id"] for r in found} == {"acs/shapes-sd-v1"}
    assert {r["category"] for r in found} == {"shapes"}
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    worst_latent, worst_pixel = 0.0, 0
    for row in found[:4]:
        assert row["scheduler"] == "dpmpp-2m"
        x_t = torch.randn([1, *row["latent_shape"]], generator=torch.Generator("cpu").manual_seed(row["seed"]))
        latents = pipeline(
            prompt=[row["unsafe_prompt"], row["safe_prompt"]], negative_prompt=[row["negative_prompt"]] * 2,
            num_inference_steps=row["steps"], guidance_scale=row["guidance_scale"], height=row["height"],
            width=row["width"], latents=x_t.repeat(2, 1, 1, 1), output_type="latent",
        ).images
        images = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample
        images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).detach().numpy()
        for i, side in enumerate(("unsafe", "safe")):
            worst_latent = max(worst_latent, relative_error(latents[i].numpy(), stored_latent(row, side)))
            pixels = np.asarray(Image.open(io.BytesIO(row[f"{side}_image"]["bytes"])).convert("RGB")).astype(int)
            worst_pixel = max(worst_pixel, int(np.abs(pixels - (images[i] * 255).round().astype(int)).max()))
    print(f"demonstrator, dpmpp-2m: max |latent diff| / range = {worst_latent:.2e}, max pixel diff = {worst_pixel}")
    assert worst_latent <= LATENT_TOLERANCE
    assert worst_pixel <= PIXEL_TOLERANCE


def test_ddim_pairs_match_diffusers(pipeline, tmp_path):
    from diffusers import DDIMScheduler

    built = acs_build(tmp_path, MODEL, scheduler="ddim", steps=10, guidance=5.0)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    worst = 0.0
    for row in built:
        x_t = torch.randn([1, *row["latent_shape"]], generator=torch.Generator("cpu").manual_seed(row["seed"]))
        theirs = pipeline(
            prompt=[row["unsafe_prompt"], row["safe_prompt"]], negative_prompt=[row["negative_prompt"]] * 2,
            num_inference_steps=row["steps"], guidance_scale=row["guidance_scale"], height=64, width=64,
            latents=x_t.repeat(2, 1, 1, 1), output_type="latent",
        ).images.numpy()
        for i, side in enumerate(("unsafe", "safe")):
            worst = max(worst, relative_error(theirs[i], stored_latent(row, side)))
    print(f"demonstrator, ddim: max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE


def test_the_main_jobs_images_show_most_of_their_prompts():
    """The shapes judge read both images of every pair. The committed weights draw the objects,
    their positions and backgrounds mostly right and colours often wrong (docs/performance.md):
    measured 2026-12-07, a mean score of 0.78 and 6 of 36 images showing all of their prompt.
    The bounds sit below that, so that a runtime or judge change that breaks the pictures fails."""
    found = rows()
    assert all(r["shapes_unsafe"] is not None and r["shapes_safe"] is not None for r in found)
    scores = [r["shapes_unsafe"] for r in found] + [r["shapes_safe"] for r in found]
    mean = sum(scores) / len(scores)
    shown = sum(score == 1.0 for score in scores)
    print(f"main job: mean shapes score {mean:.3f}, {shown} of {len(scores)} images show all of their prompt")
    assert mean >= MIN_MEAN_SCORE
    assert shown >= MIN_SHOWN
    assert all(r["valid"] == (r["shapes_unsafe"] == 1.0 and r["shapes_safe"] == 1.0) for r in found)


MIN_MEAN_SCORE = 0.6
MIN_SHOWN = 3
