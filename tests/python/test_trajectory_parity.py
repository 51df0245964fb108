"""Training outputs against diffusers: the trajectory columns (`trajectory_steps`,
`trajectory_timesteps`, `trajectory_latents`, `trajectory_eps_unsafe`, `trajectory_eps_safe`),
the change masks (`change_mask`, `change_mask_latent`) and benign rows (`[[sources]] role =
"benign"`).

acs builds two pairs and one benign prompt from a random-weight SD 1.5-topology folder that
diffusers itself saved (model_factory.save_reduced), recording steps RECORDED of STEPS with CFG.
The reference is diffusers' StableDiffusionPipeline on the same folder, run on the unsafe prompt
alone with generator=Generator("cpu").manual_seed(seed):

- x_0 = x_T * init_noise_sigma, x_k (k > 0) = the latents `callback_on_step_end` receives after
  step k - 1;
- eps_unsafe at step k = the pipeline's own guided `noise_pred` (a forward hook on the UNet
  keeps its scaled input, timestep and output);
- eps_safe at step k = pipe.unet on that same scaled input and timestep with the negative and the
  safe prompt's embeddings, guided the same way.

In prompt-switch mode the unsafe branch is the unsafe prompt's trajectory from x_T to the end
(the shared prefix is conditioned on the unsafe prompt), so the reference is the same.
Tolerance: per recorded step and column, max |acs - reference| <= 1e-3 * (max - min) of the
reference (the columns are float16: rounding alone is up to ~2.5e-4 of the range). The benign
row must be what diffusers renders for its prompt alone.

The change masks are checked on the embedded tiny model's pairs (those of the reduced folder
differ by less than 25 levels everywhere): against the definition recomputed from the two PNGs,
`changed_area`, `changed_box`, the latent-resolution max-pool, and `datasets` decoding.

Environment (set by scripts/test.sh): ACS_BIN, ACS_TINY_DIR (its tokenizer is reused)."""

import glob
import io
import os
import subprocess
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import required_env
from model_factory import save_reduced

TINY = required_env("ACS_TINY_DIR")
ACS = required_env("ACS_BIN")

PAIRS = (
    '{"unsafe_prompt": "a bloody knife on a table", "safe_prompt": "a clean knife on a table", "seed": 7}\n'
    '{"unsafe_prompt": "a nude figure in a garden", "safe_prompt": "a clothed figure in a garden", "seed": 2024, '
    '"category": "sexual"}\n'
)
BENIGN = "a lighthouse on a rocky coast at dawn\n"
STEPS = 10
RECORDED = [0, 3, 7]
GUIDANCE = 7.5
# 128 px, as test_diffusers_parity.py: at 64 px the four-level UNet's deepest level is one latent
# cell and random weights make it ill-conditioned at some x_k (measured: rounding diffusers' own
# x_1 to float16 moved its guided output by 1.5e-2 of the range, dpmpp-2m, seed 7); at 128 px
# the same rounding moves it by <= 1.9e-4.
SIZE = 128
SWITCH_AT = 0.4  # prompt-switch: steps 0-3 shared, RECORDED spans both sides of the fork

TOLERANCE = 1e-3  # of the reference's range, per recorded step
PIXEL_TOLERANCE = 2  # 8-bit levels, as test_diffusers_parity.py
LATENT_TOLERANCE = 1e-3  # final latents, of max |value|, as test_diffusers_parity.py

CONFIGS = [("ddim", "shared-latent"), ("ddim", "prompt-switch"), ("euler-ancestral", "shared-latent")]
TRAJECTORY_COLUMNS = ("trajectory_steps", "trajectory_timesteps", "trajectory_latents", "trajectory_eps_unsafe",
                      "trajectory_eps_safe")
MASK_COLUMNS = ("change_mask", "change_mask_latent")


# ---------------------------------------------------------------------------------------------
# acs side


def write_manifest(folder, model_dir, scheduler, mode, masks=True, threshold=None, dilation=None, size=SIZE):
    pairs = folder / "pairs.jsonl"
    pairs.write_text(PAIRS)
    benign = folder / "benign.txt"
    benign.write_text(BENIGN)
    model = f'[model]\npath = "{model_dir}"\n' if model_dir else '[model]\nembedded = "tiny"\n'
    output = f"trajectory_steps = {RECORDED}\nmasks = {'true' if masks else 'false'}\n"
    if threshold is not None:
        output += f"mask_threshold = {threshold}\n"
    if dilation is not None:
        output += f"mask_dilation = {dilation}\n"
    manifest = folder / "build.toml"
    manifest.write_text(
        f'{model}[sampling]\nscheduler = "{scheduler}"\nsteps = {STEPS}\nguidance_scale = {GUIDANCE}\n'
        f'height = {size}\nwidth = {size}\n'
        f'[alignment]\nmode = "{mode}"\nswitch_at = {SWITCH_AT}\n'
        f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\ncategory = "violence"\n'
        f'[[sources]]\nkind = "prompts-txt"\npath = "{benign}"\nrole = "benign"\n'
        f'[output]\nsplits = {{ train = 1.0 }}\n{output}'
    )
    return manifest


def acs_build(folder, model_dir, scheduler, mode, **kw):
    """Builds PAIRS + BENIGN with acs; returns the rows (pyarrow, undecoded)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder, model_dir, scheduler, mode, **kw)
    out = folder / "out"
    run = subprocess.run([ACS, "build", "--manifest", str(manifest), "--out", str(out)], capture_output=True,
                         text=True, env={**os.environ, "ACS_HOME": str(folder / "home")})
    if run.returncode != 0:
        pytest.fail(f"acs build exited {run.returncode} on {manifest}:\n{run.stderr[-2000:]}", pytrace=False)
    table = pq.read_table(sorted(glob.glob(str(out / "data" / "*.parquet"))))
    missing = [c for c in TRAJECTORY_COLUMNS + MASK_COLUMNS if c not in table.column_names]
    if missing:
        pytest.fail(f"acs wrote no {', '.join(missing)} column(s) although the manifest asks for them "
                    f"(trajectory_steps = {RECORDED}, masks = true)", pytrace=False)
    rows = table.to_pylist()
    assert len(rows) == 3, [r["unsafe_prompt"] for r in rows]
    return out, rows


def pairs_and_benign(rows):
    benign = [r for r in rows if r["category"] == "benign"]
    assert len(benign) == 1, "one benign row expected (category 'benign')"
    return [r for r in rows if r["category"] != "benign"], benign[0]


def trajectory(row, column):
    """A float16 trajectory column as float32 [n_steps, *latent_shape]."""
    data = row[column]
    assert data is not None, f"{column} is null in row {row['unsafe_prompt']!r}"
    n = len(row["trajectory_steps"])
    shape = [n, *row["latent_shape"]]
    assert len(data) == 2 * int(np.prod(shape)), f"{column}: {len(data)} bytes for shape {shape} in float16"
    return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(shape)


def png(struct):
    return Image.open(io.BytesIO(struct["bytes"]))


# ---------------------------------------------------------------------------------------------
# diffusers side


def guided(output, guidance):
    if guidance > 1:
        uncond, cond = output.chunk(2)
        return uncond + guidance * (cond - uncond)
    return output


@torch.no_grad()
def reference(pipe, row, recorded):
    """diffusers on the row's unsafe prompt alone: per recorded step k, (x_k, t_k, eps_unsafe,
    eps_safe) as float32 numpy, and the final latents."""
    latents_after = {}
    unet_calls = []

    def on_step_end(_pipe, i, _t, kwargs):
        latents_after[i + 1] = kwargs["latents"].clone()
        return {}

    def unet_hook(_module, args, kwargs, output):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        unet_calls.append((sample.clone(), timestep, output[0].clone()))

    guidance = row["guidance_scale"]
    handle = pipe.unet.register_forward_hook(unet_hook, with_kwargs=True)
    try:
        final = pipe(
            prompt=row["unsafe_prompt"], negative_prompt=row["negative_prompt"], num_inference_steps=row["steps"],
            guidance_scale=guidance, height=row["height"], width=row["width"],
            generator=torch.Generator("cpu").manual_seed(row["seed"]), output_type="latent",
            callback_on_step_end=on_step_end,
        ).images
    finally:
        handle.remove()
    assert len(unet_calls) == row["steps"]
    x_t = torch.randn([1, *row["latent_shape"]], generator=torch.Generator("cpu").manual_seed(row["seed"]))
    latents_after[0] = x_t * pipe.scheduler.init_noise_sigma

    safe_embeds, negative_embeds = pipe.encode_prompt(
        row["safe_prompt"], "cpu", 1, guidance > 1, negative_prompt=row["negative_prompt"])
    context = torch.cat([negative_embeds, safe_embeds]) if guidance > 1 else safe_embeds
    steps = []
    for k in recorded:
        sample, timestep, output = unet_calls[k]
        safe_output = pipe.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
        steps.append(dict(
            latent=latents_after[k][0].numpy(), timestep=float(timestep),
            eps_unsafe=guided(output, guidance)[0].numpy(), eps_safe=guided(safe_output, guidance)[0].numpy(),
        ))
    return steps, final[0].numpy()


def relative(theirs, ours):
    """max |ours - theirs| / (max - min) of theirs."""
    return float(np.abs(ours - theirs).max()) / float(theirs.max() - theirs.min())


def decode(pipe, latents):
    with torch.no_grad():
        image = pipe.vae.decode(torch.from_numpy(latents)[None] / pipe.vae.config.scaling_factor).sample
    return ((image[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(int)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The reduced SD 1.5 folder and diffusers' pipeline on it (DDIM, as saved)."""
    warnings.filterwarnings("ignore")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    folder = tmp_path_factory.mktemp("sd15")
    pipe = save_reduced(folder, os.path.join(TINY, "tokenizer"), "sd15")
    return folder, pipe


@pytest.fixture(scope="module")
def builds(model, tmp_path_factory):
    cache = {}

    def get(scheduler, mode):
        if (scheduler, mode) not in cache:
            folder = tmp_path_factory.mktemp(f"{scheduler}-{mode}")
            cache[scheduler, mode] = acs_build(folder, model[0], scheduler, mode)
        return cache[scheduler, mode]

    return get


@pytest.fixture(scope="module")
def references(model):
    """diffusers' reference per (scheduler, row), computed once (prompt-switch shares it)."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    _, pipe = model
    base_config = pipe.scheduler.config
    classes = {"ddim": DDIMScheduler, "euler-ancestral": EulerAncestralDiscreteScheduler}
    cache = {}

    def get(scheduler, row):
        key = (scheduler, row["unsafe_prompt"], row["negative_prompt"], row["safe_prompt"], row["seed"],
               row["guidance_scale"], row["steps"], row["height"], row["width"])
        if key not in cache:
            pipe.scheduler = classes[scheduler].from_config(base_config)
            cache[key] = reference(pipe, row, RECORDED)
        return cache[key]

    return get


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("scheduler,mode", CONFIGS)
def test_trajectories_match_diffusers(builds, references, scheduler, mode):
    _, rows = builds(scheduler, mode)
    worst = {c: 0.0 for c in ("trajectory_latents", "trajectory_eps_unsafe", "trajectory_eps_safe")}
    failures = []
    for row in rows:
        assert row["trajectory_steps"] == RECORDED
        assert row["scheduler"] == scheduler and row["alignment_mode"] == mode
        if mode == "prompt-switch" and row["category"] != "benign":
            assert row["switch_step"] == round(SWITCH_AT * STEPS)
        steps, _ = references(scheduler, row)
        assert row["trajectory_timesteps"] == [round(s["timestep"]) for s in steps], \
            (row["trajectory_timesteps"], [s["timestep"] for s in steps])
        for column, key in (("trajectory_latents", "latent"), ("trajectory_eps_unsafe", "eps_unsafe"),
                            ("trajectory_eps_safe", "eps_safe")):
            ours = trajectory(row, column)
            for i, (k, step) in enumerate(zip(RECORDED, steps)):
                error = relative(step[key], ours[i])
                worst[column] = max(worst[column], error)
                if error > TOLERANCE:
                    failures.append(f"{column} step {k} ({row['category']}, seed {row['seed']}): {error:.2e}")
    print(f"{scheduler} {mode}: " + ", ".join(f"{c} {e:.2e}" for c, e in worst.items()))
    assert not failures, "max |acs - diffusers| / range above 1e-3:\n" + "\n".join(failures)


def test_change_masks(tmp_path):
    """Default mask settings on the tiny model (the reduced SD 1.5 folder's pairs differ by less
    than 25 levels everywhere at 128 px)."""
    out, rows = acs_build(tmp_path, None, "ddim", "shared-latent", size=64)
    pairs, _ = pairs_and_benign(rows)
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=sorted(glob.glob(str(out / "data" / "*.parquet"))), split="train")
    for row, decoded in zip(rows, dataset):
        assert decoded["pair_id"] == row["pair_id"]
        mask_image = decoded["change_mask"]
        assert isinstance(mask_image, Image.Image), f"datasets decodes change_mask as {type(mask_image)}"
        assert mask_image.size == (row["width"], row["height"])
        assert png(row["change_mask"]).mode == "1", "change_mask should be a 1-bit PNG"
        mask = np.asarray(mask_image.convert("L")) > 0
        # The definition: largest channel |difference| > 25 (no dilation by default).
        unsafe = np.asarray(png(row["unsafe_image"]).convert("RGB")).astype(int)
        safe = np.asarray(png(row["safe_image"]).convert("RGB")).astype(int)
        expected = np.abs(unsafe - safe).max(axis=2) > 25
        assert np.array_equal(mask, expected), f"{int((mask != expected).sum())} mask pixels differ"
        assert abs(mask.mean() - row["changed_area"]) < 1e-6, (mask.mean(), row["changed_area"])
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert row["changed_box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        else:
            assert row["changed_box"] is None
        _, lh, lw = row["latent_shape"]
        latent_mask = np.frombuffer(row["change_mask_latent"], dtype=np.uint8)
        assert latent_mask.size == lh * lw
        pooled = mask.reshape(lh, row["height"] // lh, lw, row["width"] // lw).max(axis=(1, 3))
        assert np.array_equal(latent_mask.reshape(lh, lw), pooled.astype(np.uint8))
    assert any(png(r["change_mask"]).getbbox() for r in pairs), "no pair changed any pixel: a vacuous check"


def test_mask_threshold_and_dilation(tmp_path):
    """mask_threshold = 100, mask_dilation = 1 on the tiny model (whose pairs differ by more than
    25 almost everywhere): the pixels differing by more than 100, grown by a 3 x 3 square."""
    _, rows = acs_build(tmp_path, None, "ddim", "shared-latent", threshold=100, dilation=1, size=64)
    grown = 0
    for row in rows:
        mask = np.asarray(png(row["change_mask"]).convert("L")) > 0
        unsafe = np.asarray(png(row["unsafe_image"]).convert("RGB")).astype(int)
        safe = np.asarray(png(row["safe_image"]).convert("RGB")).astype(int)
        raw = np.pad(np.abs(unsafe - safe).max(axis=2) > 100, 1)
        h, w = mask.shape
        expected = np.zeros_like(mask)
        for dy in range(3):
            for dx in range(3):
                expected |= raw[dy:dy + h, dx:dx + w]
        assert np.array_equal(mask, expected), f"{int((mask != expected).sum())} pixels differ"
        grown += int(mask.sum() - raw.sum())
        # changed_area and changed_box describe the (dilated) mask.
        assert abs(mask.mean() - row["changed_area"]) < 1e-6, (mask.mean(), row["changed_area"])
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert row["changed_box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert grown > 0, "the dilation added no pixel: a vacuous check"


@pytest.mark.parametrize("scheduler,mode", [("ddim", "shared-latent"), ("euler-ancestral", "shared-latent")])
def test_benign_row_is_the_prompt_alone(builds, references, model, scheduler, mode):
    _, pipe = model
    _, rows = builds(scheduler, mode)
    _, row = pairs_and_benign(rows)
    assert row["safe_prompt"] == row["unsafe_prompt"] == BENIGN.strip()
    assert row["concepts"] == [] and row["token_edit_distance"] == 0
    assert row["safe_image"]["bytes"] == row["unsafe_image"]["bytes"]
    assert row["safe_latent"] == row["unsafe_latent"]
    assert row["trajectory_eps_safe"] == row["trajectory_eps_unsafe"]
    assert not np.asarray(png(row["change_mask"]).convert("L")).any()
    assert not any(row["change_mask_latent"])
    _, final = references(scheduler, row)
    ours = np.frombuffer(row["unsafe_latent"], dtype="<f2").astype(np.float32).reshape(row["latent_shape"])
    latent_error = float(np.abs(final - ours).max()) / float(np.abs(final).max())
    pixels = np.asarray(png(row["unsafe_image"]).convert("RGB")).astype(int)
    pixel_error = int(np.abs(pixels - decode(pipe, final)).max())
    print(f"benign ({scheduler}): final latents {latent_error:.2e} of max |value|, pixels {pixel_error}")
    assert latent_error <= LATENT_TOLERANCE
    assert pixel_error <= PIXEL_TOLERANCE
