"""Each component of the runtime against its diffusers / transformers counterpart on identical
weights (PyTorch, CPU, float32): text-encoder hidden states, one UNet forward, VAE decode, and
every scheduler's steps. `acs model forward` runs acs's side on tensors written here.

Models: the embedded tiny model, and reduced copies of the SD 1.5 and SD 2.x (v-prediction)
topologies saved by diffusers (model_factory.py). Tolerance: max |difference| <= 1e-3 of the
peer output's range (max |value|)."""

import os
import subprocess
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import required_env
from model_factory import save_reduced

TINY = required_env("ACS_TINY_DIR")
ACS = required_env("ACS_BIN")
TOLERANCE = 1e-3
PROMPTS = [
    "a bloody knife on a table",
    "a clothed figure in a garden, oil painting",
    "  Ünïcödé café — 3 cats & 2 dogs!!  ",
    "",
]
SCHEDULERS = ["ddim", "euler", "euler-ancestral", "dpmpp-2m", "dpmpp-2m-karras"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (folder, diffusers pipeline), built on first use."""
    warnings.filterwarnings("ignore")
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    cache = {}

    def get(name):
        if name not in cache:
            if name == "tiny":
                pipe = StableDiffusionPipeline.from_pretrained(
                    TINY, safety_checker=None, requires_safety_checker=False)
                cache[name] = (TINY, pipe)
            else:
                folder = tmp_path_factory.mktemp(name)
                cache[name] = (str(folder), save_reduced(folder, os.path.join(TINY, "tokenizer"), name))
        return cache[name]

    return get


def acs_forward(tmp_path, model_dir, tensors, *args):
    inputs, out = tmp_path / "inputs.safetensors", tmp_path / "outputs.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(inputs))
    subprocess.run([ACS, "model", "forward", "--model", str(model_dir), "--inputs", str(inputs),
                    "--out", str(out), *args], check=True, capture_output=True)
    return load_file(str(out))


def relative_error(theirs, ours):
    theirs, ours = np.asarray(theirs, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    assert theirs.shape == ours.shape
    return float(np.abs(theirs - ours).max()) / float(np.abs(theirs).max())


@pytest.mark.parametrize("name", ["tiny", "sd15", "sd2-v"])
def test_text_encoder_hidden_states(models, tmp_path, name):
    folder, pipe = models(name)
    ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = pipe.text_encoder(ids)[0]
    ours = acs_forward(tmp_path, folder, {"input_ids": ids.to(torch.int64)})["text_hidden_states"]
    error = relative_error(theirs, ours)
    print(f"{name} text encoder: {error:.2e}")
    assert error <= TOLERANCE


@pytest.mark.parametrize("name", ["tiny", "sd15", "sd2-v"])
@pytest.mark.parametrize("timestep", [1, 500, 999])
def test_one_unet_forward(models, tmp_path, name, timestep):
    folder, pipe = models(name)
    generator = torch.Generator().manual_seed(timestep)
    # 16 x 16 latents: at 8 x 8 the deepest level of a four-level UNet is 1 x 1 and its group
    # norms normalise two values each, which makes random inputs ill-conditioned.
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        theirs = pipe.unet(sample, timestep, encoder_hidden_states=context).sample
    ours = acs_forward(tmp_path, folder, {
        "unet_sample": sample, "unet_timestep": torch.tensor([float(timestep)]), "unet_context": context,
    })["unet_output"]
    error = relative_error(theirs, ours)
    print(f"{name} UNet at t={timestep}: {error:.2e}")
    assert error <= TOLERANCE


@pytest.mark.parametrize("name", ["tiny", "sd15"])
def test_vae_decode_batch(models, tmp_path, name):
    """A batch of three latents (a pair is a batch of two): every image must attend only to
    its own pixels."""
    folder, pipe = models(name)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 4
    with torch.no_grad():
        theirs = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    ours = acs_forward(tmp_path, folder, {"vae_latents": latents})["vae_images"]
    error = relative_error(theirs, ours)
    print(f"{name} VAE decode: {error:.2e}")
    assert error <= TOLERANCE


def diffusers_scheduler(pipe, name):
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                           EulerDiscreteScheduler)

    config = pipe.scheduler.config
    return {
        "ddim": lambda: DDIMScheduler.from_config(config),
        "euler": lambda: EulerDiscreteScheduler.from_config(config),
        "euler-ancestral": lambda: EulerAncestralDiscreteScheduler.from_config(config),
        "dpmpp-2m": lambda: DPMSolverMultistepScheduler.from_config(config),
        "dpmpp-2m-karras": lambda: DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True),
    }[name]()


@pytest.mark.parametrize("name", ["tiny", "sd2-v", "turbo"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_scheduler_steps(models, tmp_path, name, scheduler):
    """Ten steps of each scheduler fed the same model outputs (and, for Euler ancestral, noise
    from a generator with the same seed): same timesteps, same final sample."""
    folder, pipe = models(name)
    steps, seed = 10, 1234
    sched = diffusers_scheduler(pipe, scheduler)
    sched.set_timesteps(steps)
    generator = torch.Generator().manual_seed(99)
    sample = torch.randn(1, 4, 8, 8, generator=generator) * sched.init_noise_sigma
    outputs = torch.randn(steps, 1, 4, 8, 8, generator=generator)
    x = sample.clone()
    noise = torch.Generator().manual_seed(seed)
    for i, t in enumerate(sched.timesteps):
        sched.scale_model_input(x, t)
        x = sched.step(outputs[i], t, x, generator=noise).prev_sample
    ours = acs_forward(tmp_path, folder, {
        "scheduler_sample": sample, "scheduler_model_outputs": outputs,
        "scheduler_seed": torch.tensor([seed], dtype=torch.int64),
    }, "--scheduler", scheduler, "--steps", str(steps))
    np.testing.assert_allclose(ours["scheduler_timesteps"].numpy(), sched.timesteps.float().numpy(), atol=1e-3)
    error = relative_error(x, ours["scheduler_final"])
    print(f"{name} {scheduler}: {error:.2e}")
    assert error <= TOLERANCE
