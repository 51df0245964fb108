"""Attention-controlled pairs (`[alignment] mode = "attention"`) against the reference written
from Prompt-to-Prompt's and InstructPix2Pix's descriptions on diffusers' attention processors
(attention_controller.py): acs builds pairs from reduced random-weight SD 1.5 and SD 2.x folders
that diffusers wrote, and the reference renders the same rows from the same folders.

Cases: a word swap (a one-token word for a two-token one) with self-attention injection and the
local blend (SD 1.5, 512 px, DDIM); a refinement (inserted words) with reweighting (SD 1.5,
512 px, Euler ancestral with the pair's noise shared); a swap with the local blend and a per-word
cross-replacement range (SD 2.x v-prediction, 768 px, DDIM: blend maps at 24 x 24);
InstructPix2Pix's shared self-attention (SD 1.5, 512 px, Euler ancestral).

Environment (set by scripts/test.sh): ACS_BIN, ACS_TINY_DIR (its tokenizer folder is reused)."""

import glob
import json
import os
import subprocess
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

from attention_controller import render_pair
from conftest import required_env
from model_factory import save_reduced

ACS = required_env("ACS_BIN")
TINY = required_env("ACS_TINY_DIR")

# As test_diffusers_parity.py: stored latents are float16 (up to ~5e-4 of the range from
# rounding alone); the tolerance is relative to the range of the reference's latent.
LATENT_TOLERANCE = 1e-3
STEPS = 10
GUIDANCE = 7.5

KNIFE = {"unsafe_prompt": "a bloody knife on a table", "safe_prompt": "a clean knife on a table", "seed": 7}
# "spotless" is two tokens against one: the swapped word's columns spread.
SPREAD = {"unsafe_prompt": "a bloody knife on a table", "safe_prompt": "a spotless knife on a table", "seed": 7}
INSERTION = {"unsafe_prompt": "a knife on a table", "safe_prompt": "a clean shiny knife on a table", "seed": 11}

# Blend thresholds: with random weights the cross-attention maps are nearly flat (after the
# 3 x 3 max pool every cell is above ~0.87 of the maximum), so Prompt-to-Prompt's 0.3 selects
# every cell and would test nothing. These thresholds cut the masks in parts (measured on the
# reference: 69 % of the cells at 512 px, 36 % at 768 px) with the reference's normalised maps
# no closer than 1e-4 to the threshold at any blended step (the test prints that margin).
CASES = {
    "sd15-spread-swap-self-blend-ddim": dict(
        kind="sd15", size=512, scheduler="ddim", pairs=[SPREAD],
        settings={"cross_replace": 0.8, "self_replace": 0.4, "local_blend": {"threshold": 0.9335, "start": 0.2}},
    ),
    "sd15-refine-reweight-euler-a": dict(
        kind="sd15", size=512, scheduler="euler-ancestral", pairs=[INSERTION],
        settings={"cross_replace": [0.0, 0.8], "self_replace": 0.4, "reweight": {"clean": 2.0}},
    ),
    "sd2v-swap-blend-word-range-ddim": dict(
        kind="sd2-v", size=768, scheduler="ddim", pairs=[KNIFE],
        settings={"cross_replace": {"default": 1.0, "clean": 0.4}, "self_replace": 0.4,
                  "local_blend": {"threshold": 0.9285, "start": 0.2}},
    ),
    # Guidance 15 (the top of InstructPix2Pix's range): random weights make self-attention nearly
    # uniform, and at 7.5 sharing it moves the safe latent by only 2.5e-3 of the range (measured);
    # at 15 by 5.0e-3, and sharing it in the conditional half only would differ by 7.9e-3.
    "sd15-instruct-pix2pix-euler-a": dict(
        kind="sd15", size=512, scheduler="euler-ancestral", pairs=[KNIFE], guidance=15.0,
        settings={"share_self_attention": 0.5},
    ),
}


def toml_value(value):
    """A settings value as TOML (floats, [a, b] arrays, inline tables with quoted keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def acs_build(tmp_path, model_dir, case):
    """Builds the case's pairs with acs under its attention settings; returns the rows."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in case["pairs"]))
    alignment = "".join(f"{key} = {toml_value(value)}\n" for key, value in case["settings"].items())
    manifest = tmp_path / "build.toml"
    manifest.write_text(
        f'[model]\npath = "{model_dir}"\n'
        f'[sampling]\nscheduler = "{case["scheduler"]}"\nsteps = {STEPS}\n'
        f'guidance_scale = {case.get("guidance", GUIDANCE)}\n'
        f'height = {case["size"]}\nwidth = {case["size"]}\n'
        f'[alignment]\nmode = "attention"\n{alignment}'
        f'[[sources]]\nkind = "pairs-jsonl"\npath = "{pairs}"\ncategory = "violence"\n'
        f'[output]\nsplits = {{ train = 1.0 }}\nstore_latents = true\n'
    )
    out = tmp_path / "out"
    result = subprocess.run([ACS, "build", "--manifest", str(manifest), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = pq.read_table(sorted(glob.glob(str(out / "data" / "*.parquet")))).to_pylist()
    assert len(rows) == len(case["pairs"])
    return rows


def stored_latent(row, side):
    return np.frombuffer(row[f"{side}_latent"], dtype="<f2").reshape(row["latent_shape"])


def relative_error(theirs, ours):
    return float(np.abs(theirs - ours).max()) / float(np.abs(theirs).max())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The reduced models, written once per module and loaded as pipelines."""
    warnings.filterwarnings("ignore")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("attention-models")
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = (root / kind, save_reduced(root / kind, os.path.join(TINY, "tokenizer"), kind))
        return cache[kind]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_attention_controlled_pairs_match_the_reference(models, tmp_path, name):
    case = CASES[name]
    model_dir, pipe = models(case["kind"])
    rows = acs_build(tmp_path, model_dir, case)
    blend = "local_blend" in case["settings"]
    by_prompt = {(p["unsafe_prompt"], p["safe_prompt"]): p for p in case["pairs"]}
    worst = 0.0
    for row in rows:
        pair = by_prompt[(row["unsafe_prompt"], row["safe_prompt"])]
        assert row["alignment_mode"] == "attention"
        assert isinstance(row["alignment_settings"], str) and row["alignment_settings"]
        assert (row["seed"], row["steps"], row["height"], row["width"]) == \
            (pair["seed"], STEPS, case["size"], case["size"])
        assert abs(row["guidance_scale"] - case.get("guidance", GUIDANCE)) < 1e-6
        ref = render_pair(pipe, row["unsafe_prompt"], row["safe_prompt"], row["seed"], row["steps"],
                          row["guidance_scale"], row["height"], row["width"], row["negative_prompt"] or "",
                          case["scheduler"], case["settings"])
        c, h, w = row["latent_shape"]
        assert ref["latents"].shape == (2, c, h, w)
        unsafe, safe = stored_latent(row, "unsafe"), stored_latent(row, "safe")
        if blend:
            # The thresholds are meant to cut the mask (see CASES): a reference mask that is empty
            # or full says they need measuring again.
            assert 0 < int(ref["mask"].sum()) < ref["mask"].size
            assert row["blend_mask"] is not None
            mask = np.frombuffer(row["blend_mask"], dtype=np.uint8).reshape(h, w)
            assert set(np.unique(mask)) <= {0, 1}
            differ = int((mask != ref["mask"]).sum())
            # The margin says how close the reference's normalised maps came to the threshold.
            assert differ == 0, f"{differ} mask cells differ (reference margin {ref['blend_margin']:.2e})"
            outside = np.broadcast_to(mask == 0, unsafe.shape)
            # Outside the mask the safe latent is the unsafe latent, bit for bit.
            assert np.array_equal(safe.view(np.uint16)[outside], unsafe.view(np.uint16)[outside])
            print(f"{name} seed {row['seed']}: mask {int(mask.sum())} of {mask.size} cells, "
                  f"reference margin {ref['blend_margin']:.2e}")
        else:
            assert row["blend_mask"] is None
        for i, latent in enumerate((unsafe, safe)):
            worst = max(worst, relative_error(ref["latents"][i], latent.astype(np.float32)))
    print(f"{name}: max |latent diff| / range = {worst:.2e}")
    assert worst <= LATENT_TOLERANCE
