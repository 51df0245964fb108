"""examples/python/train_patch.py on a fresh acs dataset with training outputs: acs builds four
pairs and two benign prompts with the embedded tiny model (trajectory_steps, masks), the example
trains a ControlNet patch for a few full-batch steps on the CPU, and then:

- the differential loss goes down;
- the frozen UNet of ACS_TINY_DIR reproduces the stored eps_unsafe (the dataset and the model
  folder agree);
- the saved patch, reloaded with ControlNetModel.from_pretrained, leaves the guided output on
  benign rows nearly unchanged relative to the frozen UNet's output, and changes it more on pairs.

Environment (set by scripts/test.sh): ACS_BIN, ACS_TINY_DIR."""

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from conftest import required_env

ACS = required_env("ACS_BIN")
TINY = required_env("ACS_TINY_DIR")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "python", "train_patch.py")
RECORDED = [2, 5, 8]
BENIGN = "a lighthouse on a rocky coast at dawn\na bowl of fruit on a wooden table\n"
REQUIRED = ("change_mask", "change_mask_latent", "trajectory_steps", "trajectory_timesteps", "trajectory_latents",
            "trajectory_eps_unsafe", "trajectory_eps_safe")
STEPS = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-patch")
    with open(os.path.join(ROOT, "samples", "pairs.jsonl")) as f:
        (folder / "pairs.jsonl").write_text("".join(f.readlines()[:4]))
    (folder / "benign.txt").write_text(BENIGN)
    manifest = folder / "build.toml"
    manifest.write_text(
        '[model]\nembedded = "tiny"\n[sampling]\nscheduler = "ddim"\nsteps = 10\nguidance_scale = 7.5\nheight = 64\nwidth = 64\n'
        '[[sources]]\nkind = "pairs-jsonl"\npath = "pairs.jsonl"\ncategory = "sexual"\n'
        '[[sources]]\nkind = "prompts-txt"\npath = "benign.txt"\nrole = "benign"\n'
        f'[output]\nsplits = {{ train = 1.0 }}\ntrajectory_steps = {RECORDED}\nmasks = true\n'
    )
    out = folder / "out"
    run = subprocess.run([ACS, "build", "--manifest", str(manifest), "--out", str(out)], capture_output=True,
                         text=True, env={**os.environ, "ACS_HOME": str(folder / "home")})
    if run.returncode != 0:
        pytest.fail(f"acs build exited {run.returncode}:\n{run.stderr[-2000:]}", pytrace=False)
    table = pq.read_table(sorted(glob.glob(str(out / "data" / "*.parquet"))))
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        pytest.fail(f"acs wrote no {', '.join(missing)} column(s) for a manifest with trajectory_steps and "
                    "masks = true", pytrace=False)
    categories = table.column("category").to_pylist()
    assert categories.count("benign") == 2 and len(categories) == 6, categories
    assert all(steps == RECORDED for steps in table.column("trajectory_steps").to_pylist())
    return out


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    patch = tmp_path_factory.mktemp("patch") / "patch"
    # Full batches (4 pairs x 3 steps, 2 benign rows x 3 steps): the loss is a fixed function,
    # so its decrease does not depend on which examples a step drew.
    run = subprocess.run(
        [sys.executable, EXAMPLE, "--data", str(dataset), "--model", TINY, "--steps", str(STEPS), "--lr", "1e-4",
         "--batch-size", "12", "--seed", "0", "--out", str(patch), "--json"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    history = [line for line in lines if "step" in line]
    summary = [line["summary"] for line in lines if "summary" in line]
    assert len(history) == STEPS and len(summary) == 1, run.stdout[-2000:]
    return patch, history, summary[0]


def test_differential_loss_goes_down(trained):
    _, history, summary = trained
    diff = [h["diff_loss"] for h in history]
    print("diff_loss", " ".join(f"{d:.4f}" for d in diff), "identity_loss", f"{history[-1]['identity_loss']:.2e}")
    assert summary["pair_examples"] == 12 and summary["benign_examples"] == 6
    assert sum(diff[-3:]) / 3 < 0.97 * diff[0], diff
    # The summary compares like with like: the means of the first and the last fifth.
    fifth = max(1, len(diff) // 5)
    assert summary["first_diff_loss"] == pytest.approx(sum(diff[:fifth]) / fifth)
    assert summary["last_diff_loss"] == pytest.approx(sum(diff[-fifth:]) / fifth)
    assert summary["last_diff_loss"] < summary["first_diff_loss"], summary
    # The frozen UNet reproduces the dataset's eps_unsafe (float16 storage: ~2.5e-4 of the range).
    assert summary["frozen_check"] < 1e-3, summary


def test_patch_leaves_benign_rows_alone(trained, dataset):
    from diffusers import ControlNetModel

    sys.path.insert(0, os.path.dirname(EXAMPLE))
    import train_patch

    patch_dir, _, _ = trained
    patch = ControlNetModel.from_pretrained(patch_dir).eval()
    frozen = train_patch.Frozen(TINY)
    rows = train_patch.load_rows(str(dataset), "train", "zeros")
    change = {}
    with torch.no_grad():
        for kind in ("benign", "pair"):
            chosen = [i for i, c in enumerate(rows["category"]) if (c == "benign") == (kind == "benign")]
            b = train_patch.batch([train_patch.example(rows, frozen, i, j, "zeros") for i in chosen
                                   for j in range(len(RECORDED))])
            base = train_patch.guided_eps(frozen, None, b)
            patched = train_patch.guided_eps(frozen, patch, b)
            change[kind] = float((patched - base).norm() / base.norm())
    print(f"|patched - frozen| / |frozen|: benign {change['benign']:.2e}, pairs {change['pair']:.2e}")
    # Measured 2026-11-29 (8 steps, lr 1e-4): benign 4.0e-2, pairs 5.8e-2.
    assert change["benign"] < 0.1
    assert change["pair"] > change["benign"]
