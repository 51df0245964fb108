"""CLIP similarity (the InstructPix2Pix generator's filter and rank) in Rust against transformers
on a random-weight CLIPModel written by transformers itself: the text tower with its projection
(`get_text_features`, tokens from transformers' CLIPTokenizer), the image tower
(`get_image_features` on CLIPImageProcessorPil's pixels), and the four similarities computed as
`metrics/clip_similarity.py` of timothybrooks/instruct-pix2pix does (normalised embeddings,
`F.cosine_similarity`). Then a build with `seeds_per_prompt = 3, keep_best = 2` on the tiny
model: its clip columns against `acs metrics --clip` on the rows' PNGs, the selection against
the rule (the two best valid renders by clip_direction per prompt pair), and `acs validate`.

Environment (set by scripts/test.sh): ACS_BIN, ACS_TINY_DIR (its tokenizer files are the CLIP
folder's)."""

import io
import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import required_env
import judge_factory as jf

ACS = required_env("ACS_BIN")
TINY = required_env("ACS_TINY_DIR")
ACS_HOME = os.path.dirname(os.path.dirname(TINY))

VISION = dict(jf.VISION, projection_dim=64)
TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=64, initializer_factor=3.0)
PROMPTS = [
    ("a photo of a bloody knife on a table", "a photo of a clean knife on a table"),
    ("a nude figure standing in a garden at dawn", "a clothed figure standing in a garden at dawn"),
    ("graffiti with a hateful slogan", "graffiti with a friendly slogan"),
    ("a man, shouting!", "a man, smiling."),
]


def save_clip(path, eos_token_id=None):
    """A random CLIPModel (both towers, projection 64), the PIL processor and CLIP's tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(7)
    text = dict(TEXT) if eos_token_id is None else dict(TEXT, eos_token_id=eos_token_id)
    model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=text, projection_dim=64)).eval()
    model.save_pretrained(path)
    jf.pil_processor().save_pretrained(path)
    for name in os.listdir(os.path.join(TINY, "tokenizer")):
        shutil.copy(os.path.join(TINY, "tokenizer", name), os.path.join(path, name))
    return model


def reference(model, tokenizer, paths, prompts):
    """The generator's four similarities and the four embeddings, in torch."""
    import torch.nn.functional as F

    with torch.no_grad():
        pixels = jf.pixel_values(paths)
        images = model.get_image_features(pixel_values=pixels)
        ids = tokenizer(list(prompts), padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        texts = model.get_text_features(input_ids=ids)
    images = getattr(images, "pooler_output", images)
    texts = getattr(texts, "pooler_output", texts)
    i0, i1 = F.normalize(images[0:1], dim=1), F.normalize(images[1:2], dim=1)
    t0, t1 = F.normalize(texts[0:1], dim=1), F.normalize(texts[1:2], dim=1)
    sims = dict(direction=F.cosine_similarity(i1 - i0, t1 - t0).item(), image=F.cosine_similarity(i0, i1).item(),
                unsafe=F.cosine_similarity(i0, t0).item(), safe=F.cosine_similarity(i1, t1).item())
    return sims, images.numpy(), texts.numpy()


def metrics(folder, unsafe_png, safe_png, prompts, *extra):
    out = subprocess.run([ACS, "metrics", str(unsafe_png), str(safe_png), "--json", "--prompts", *prompts,
                          "--clip", str(folder), *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "panicked" not in out.stderr
    return json.loads(out.stdout)["clip"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    model_dir = folder / "clip"
    model = save_clip(str(model_dir))
    images = folder / "images"
    images.mkdir()
    paths = jf.write_images(str(images))
    return dict(dir=model_dir, model=model, tokenizer=CLIPTokenizer.from_pretrained(str(model_dir)),
                paths=paths)


def same_size_pairs(paths, count):
    by_size = {}
    for path in paths:
        by_size.setdefault(Image.open(path).size, []).append(path)
    pairs = [(a, b) for group in by_size.values() for a, b in zip(group, group[1:])]
    assert len(pairs) >= count
    return pairs[:count]


def test_clip_similarity_matches_transformers_and_the_generators_formula(clip):
    worst = dict(embed=0.0, sims=0.0)
    spread = []
    for (unsafe_png, safe_png), prompts in zip(same_size_pairs(clip["paths"], len(PROMPTS)), PROMPTS):
        ours = metrics(clip["dir"], unsafe_png, safe_png, prompts, "--embeddings")
        sims, images, texts = reference(clip["model"], clip["tokenizer"], [unsafe_png, safe_png], prompts)
        e = ours["embeddings"]
        for mine, theirs in [(e["image_unsafe"], images[0]), (e["image_safe"], images[1]),
                             (e["text_unsafe"], texts[0]), (e["text_safe"], texts[1])]:
            mine = np.asarray(mine, np.float64)
            worst["embed"] = max(worst["embed"], float(np.abs(mine - theirs).max() / np.abs(theirs).max()))
        for key, value in sims.items():
            worst["sims"] = max(worst["sims"], abs(ours[key] - value))
        spread.append(sims["direction"])
    print(f"CLIP similarity vs transformers: embeddings max |diff| / max |ref| = {worst['embed']:.2e}, "
          f"similarities max |diff| = {worst['sims']:.2e}; directions {np.round(spread, 3).tolist()}")
    assert worst["embed"] <= 1e-4 and worst["sims"] <= 1e-4
    assert max(spread) - min(spread) > 0.05, "the random model must separate the pairs"


def test_legacy_eos_id_pools_at_the_largest_id(clip, tmp_path):
    """Configs saved before transformers knew the end-of-text id say 2 and pool at argmax."""
    legacy = tmp_path / "legacy"
    save_clip(str(legacy), eos_token_id=2)
    (unsafe_png, safe_png), = same_size_pairs(clip["paths"], 1)
    assert metrics(legacy, unsafe_png, safe_png, PROMPTS[0]) == {
        **metrics(clip["dir"], unsafe_png, safe_png, PROMPTS[0]), "sha256": metrics(legacy, unsafe_png, safe_png,
                                                                                      PROMPTS[0])["sha256"]}


def test_clip_needs_prompts_and_a_clip_folder(clip, tmp_path):
    (unsafe_png, safe_png), = same_size_pairs(clip["paths"], 1)
    out = subprocess.run([ACS, "metrics", str(unsafe_png), str(safe_png), "--clip", str(clip["dir"])],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--prompts" in out.stderr, out.stderr
    vision_only = tmp_path / "vision-only"
    jf.save_q16_tower(str(vision_only))
    out = subprocess.run([ACS, "metrics", str(unsafe_png), str(safe_png), "--prompts", *PROMPTS[0],
                          "--clip", str(vision_only)], capture_output=True, text=True)
    assert out.returncode == 2 and "panicked" not in out.stderr, out.stderr
    assert "text" in out.stderr and "(--clip)" in out.stderr, out.stderr


def test_a_keep_best_build_ranks_by_clip_direction(clip, tmp_path):
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "..", "samples", "pairs.jsonl"),
                tmp_path / "pairs.jsonl")
    with open(tmp_path / "pairs.jsonl") as f:
        lines = f.readlines()[:4]
    (tmp_path / "pairs.jsonl").write_text("".join(lines))
    (tmp_path / "m.toml").write_text(f"""
[model]
path = "{TINY}"

[sampling]
scheduler = "ddim"
steps = 3
height = 64
width = 64
seeds_per_prompt = 3
batch_pairs = 4

[alignment]
keep_best = 2

[validation]
clip_model = "{clip['dir']}"
clip_direction_min = -1.0
clip_image_min = 0.0
clip_text_min = -1.0

[[sources]]
kind = "pairs-jsonl"
path = "pairs.jsonl"
category = "violence"

[output]
splits = {{ train = 1.0 }}
""")
    env = dict(os.environ, ACS_HOME=ACS_HOME)
    out = subprocess.run([ACS, "build", "--manifest", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    table = pq.read_table(str(tmp_path / "out" / "data")).to_pylist()
    assert len(table) == 12
    groups = {}
    for row in table:
        groups.setdefault(row["safe_prompt"], []).append(row)
        u, s = tmp_path / "u.png", tmp_path / "s.png"
        u.write_bytes(row["unsafe_image"]["bytes"])
        s.write_bytes(row["safe_image"]["bytes"])
        ours = metrics(clip["dir"], u, s, (row["unsafe_prompt"], row["safe_prompt"]))
        for key in ("direction", "image", "unsafe", "safe"):
            assert abs(row[f"clip_{key}"] - ours[key]) <= 1e-5, (key, row[f"clip_{key}"], ours[key])
        # clip_image_min = 0: the verdict follows the stored value.
        assert ("clip_image: " in " ".join(row["reject_reasons"])) == (row["clip_image"] < 0.0)
    kept_total = 0
    for rows in groups.values():
        assert len(rows) == 3
        passed = [r for r in rows if not [x for x in r["reject_reasons"] if not x.startswith("keep_best: ")]]
        ranked = sorted(passed, key=lambda r: (-r["clip_direction"], -r["ssim"], r["pair_id"]))
        kept = {r["pair_id"] for r in ranked[:2]}
        assert {r["pair_id"] for r in rows if r["valid"]} == kept
        for rank, r in enumerate(ranked[2:], start=3):
            assert r["reject_reasons"] == [f"keep_best: rank {rank} of {len(passed)} valid, keeps 2"]
        kept_total += len(kept)
    print(f"keep_best build: {len(table)} renders, {kept_total} kept; "
          f"clip_direction {min(r['clip_direction'] for r in table):.3f}..{max(r['clip_direction'] for r in table):.3f}")
    out = subprocess.run([ACS, "validate", str(tmp_path / "out"), "--json", "--max-invalid-fraction", "1"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["errors"] == []
