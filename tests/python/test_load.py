"""Loads an acs smoke dataset with the peers users load it with: Hugging Face datasets, pyarrow,
polars and scikit-image. The dataset folder comes from ACS_SMOKE_DIR (scripts/test.sh builds it)."""

import glob
import io
import json
import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from conftest import required_env

DATASET = required_env("ACS_SMOKE_DIR")


def manifest():
    with open(os.path.join(DATASET, "acs-manifest.json")) as f:
        return json.load(f)


def rows_per_split():
    counts = {}
    for shard in manifest()["shards"]:
        counts[shard["split"]] = counts.get(shard["split"], 0) + shard["rows"]
    return counts


def test_hf_datasets_decodes_both_image_columns():
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    ds = load_dataset("parquet", data_dir=os.path.join(DATASET, "data"))
    assert {name: len(split) for name, split in ds.items()} == rows_per_split()
    train = ds["train"]
    assert isinstance(train.features["unsafe_image"], ImageFeature)
    assert isinstance(train.features["safe_image"], ImageFeature)
    row = train[0]
    for column in ("unsafe_image", "safe_image"):
        image = row[column]
        assert isinstance(image, Image.Image)
        assert image.size == (row["width"], row["height"])
        assert image.mode == "RGB"
    assert row["latent_shape"] == [4, row["height"] // 8, row["width"] // 8]
    latent = np.frombuffer(row["unsafe_latent"], dtype="<f2")
    assert latent.size == int(np.prod(row["latent_shape"]))


def test_pyarrow_reads_schema_v1_and_layout():
    files = sorted(glob.glob(os.path.join(DATASET, "data", "*.parquet")))
    assert files
    table = pq.read_table(files)
    assert table.num_rows == sum(rows_per_split().values())
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert table.schema.field("unsafe_image").type.equals(image_type)
    meta = pq.read_metadata(files[0])
    hf = json.loads(meta.metadata[b"huggingface"])
    for column in ("unsafe_image", "safe_image", "change_mask", "blend_mask_image"):
        assert hf["info"]["features"][column]["_type"] == "Image"
    # Image bytes (the two images and the change mask) are stored PLAIN and uncompressed;
    # other columns are zstd.
    row_group = meta.row_group(0)
    for i in range(row_group.num_columns):
        column = row_group.column(i)
        if column.path_in_schema.startswith(("unsafe_image", "safe_image", "change_mask.", "blend_mask_image.")):
            assert column.compression == "UNCOMPRESSED", column.path_in_schema
            assert "PLAIN_DICTIONARY" not in column.encodings and "RLE_DICTIONARY" not in column.encodings
        else:
            assert column.compression == "ZSTD", column.path_in_schema
    # Every shard listed with its real size.
    for shard in manifest()["shards"]:
        assert os.path.getsize(os.path.join(DATASET, shard["path"])) == shard["bytes"]


def test_polars_scans_all_shards():
    frame = pl.scan_parquet(os.path.join(DATASET, "data", "*.parquet")).select(
        "pair_id", "split", "category", "ssim", "x_t_sha256"
    ).collect()
    assert frame.height == sum(rows_per_split().values())
    assert frame["pair_id"].n_unique() == frame.height
    counts = dict(frame.group_by("split").len().iter_rows())
    assert counts == rows_per_split()


def test_ssim_matches_scikit_image():
    table = pq.read_table(sorted(glob.glob(os.path.join(DATASET, "data", "*.parquet"))))
    rows = table.select(["unsafe_image", "safe_image", "ssim"]).to_pylist()
    assert rows
    worst = 0.0
    for row in rows:
        a = np.asarray(Image.open(io.BytesIO(row["unsafe_image"]["bytes"])).convert("RGB"))
        b = np.asarray(Image.open(io.BytesIO(row["safe_image"]["bytes"])).convert("RGB"))
        expected = structural_similarity(
            rgb2gray(a) * 255.0,
            rgb2gray(b) * 255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        worst = max(worst, abs(expected - row["ssim"]))
    assert worst < 1e-4, worst
