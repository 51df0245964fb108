"""acs's initial latents against torch's CPU generator: x_T for a seed must equal
torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) bit for bit.
Uses the acs binary from ACS_BIN and the smoke dataset from ACS_SMOKE_DIR (scripts/test.sh)."""

import glob
import hashlib
import os
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import required_env

ACS = required_env("ACS_BIN")
DATASET = required_env("ACS_SMOKE_DIR")

SEEDS = [0, 1, 42, 2024, 123456789, 2**32 - 1, 2**32 + 5, 2**63 + 11]
SHAPES = [(1,), (5,), (15,), (16,), (17,), (31,), (1, 4, 8, 8), (1, 4, 9, 9), (1, 4, 64, 64), (2, 4, 96, 64)]


def torch_randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_initial_latent_is_bit_identical_to_torch(tmp_path, shape):
    for seed in SEEDS:
        out = tmp_path / f"{seed}.npy"
        subprocess.run(
            [ACS, "model", "initial-latent", "--seed", str(seed), "--shape", ",".join(map(str, shape)), "--out", str(out)],
            check=True,
        )
        ours = np.load(out)
        theirs = torch_randn(shape, seed)
        assert ours.shape == theirs.shape
        differing = int((ours.view(np.uint32) != theirs.view(np.uint32)).sum())
        assert differing == 0, f"seed {seed}: {differing} of {ours.size} values differ, max {np.abs(ours - theirs).max()}"


def test_every_row_records_torchs_x_t():
    files = sorted(glob.glob(os.path.join(DATASET, "data", "*.parquet")))
    rows = pq.read_table(files, columns=["seed", "latent_shape", "x_t_sha256"]).to_pylist()
    assert rows
    for row in rows:
        x_t = torch_randn([1, *row["latent_shape"]], row["seed"])
        assert hashlib.sha256(x_t.astype("<f4").tobytes()).hexdigest() == row["x_t_sha256"], row["seed"]
