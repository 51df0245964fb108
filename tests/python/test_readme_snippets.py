"""The README's "Reading the data" snippets, run as they are written: in a folder whose
`out/shapes` is the test command's main-job build (the VAE snippet writes `out/shapes-sd` itself
with `ACS_BIN model init-shapes`), each Python block in order in one namespace (later blocks use
earlier names). The decoded latent must give back the row's stored image."""

import io
import os
import re

import numpy as np
from PIL import Image

from conftest import required_env

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def snippets():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Reading the data", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_reading_the_data_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = snippets()
    assert len(blocks) >= 3, "the README's Reading the data section lost its Python snippets"
    os.makedirs(tmp_path / "out")
    os.symlink(required_env("ACS_SHAPES_DIR"), tmp_path / "out" / "shapes")
    monkeypatch.setenv("ACS_BIN", required_env("ACS_BIN"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "shapes-sd" / "vae" / "config.json").is_file()
    printed = capsys.readouterr().out
    assert "->" in printed and "ssim" in printed
    # The VAE snippet decoded the first row's unsafe latent: compare with the stored PNG.
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    shards = pads.dataset(os.path.join("out", "shapes", "data"), format="parquet")
    match = shards.to_table(filter=pc.field("pair_id") == namespace["row"]["pair_id"])
    png = match.column("unsafe_image").to_pylist()[0]["bytes"]
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    decoded = namespace["pixels"].astype(np.int16)
    assert decoded.shape == image.shape
    assert np.abs(decoded - image).max() <= 3
