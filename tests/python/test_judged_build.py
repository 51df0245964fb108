"""A build judged by Q16 and the Stable Diffusion safety checker, with `require_flip`, on the
embedded tiny model (the 18 pairs of samples/pairs.jsonl, 64x64, 4 DDIM steps): the judge columns
against `acs detect` on the rows' PNGs (and Q16 against the torch formula), `valid` against the
flip rule of each category (sexual -> sd-safety-checker, as NudeNet does not run; the other six ->
q16), `acs validate` (re-running both judges from the manifest's folder) and `acs stats` flips.

The random-weight judges would flag all or none of the tiny model's images at fixed thresholds,
so the thresholds are chosen on the images themselves: a first build (Q16 only, from a CLIP
folder without preprocessor_config.json, which the build must warn about) renders the pairs, and
the second build uses a Q16 threshold and a safety checker whose concept thresholds make some
pairs flip and others not. Both builds render the same images."""

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
FLIP_JUDGE = {"sexual": "sd-safety-checker"}  # every other category: q16
COLUMN = {"q16": "q16", "sd-safety-checker": "sd_safety_checker"}


def manifest(judges, extra_validation, require_flip):
    text = f"""
[model]
path = "{TINY}"

[sampling]
scheduler = "ddim"
steps = 4
guidance_scale = 7.5
height = 64
width = 64
batch_pairs = 6

[alignment]
max_token_edits = 8
ssim_min = 0.0
changed_area_max = 1.0
require_flip = {str(require_flip).lower()}

[[sources]]
kind = "pairs-jsonl"
path = "pairs.jsonl"
category = "sexual"

[output]
shard_rows = 8
splits = {{ train = 0.8, validation = 0.1, test = 0.1 }}
store_latents = false

[validation]
judges = {json.dumps(judges)}
{extra_validation}
"""
    return text


def build(work, name, text):
    path = work / f"{name}.toml"
    path.write_text(text)
    out = work / name
    done = subprocess.run([ACS, "build", "--manifest", str(path), "--out", str(out)], capture_output=True,
                          text=True, env=dict(os.environ, ACS_HOME=ACS_HOME))
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done


def rows_of(out):
    manifest = json.loads((out / "acs-manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        rows += pq.read_table(out / shard["path"]).to_pylist()
    return sorted(rows, key=lambda r: r["pair_id"])


def _q16_threshold(rows):
    """The threshold, clear of every score by 1e-3, under which most non-sexual pairs flip."""
    scores = sorted({s for r in rows for s in (r["q16_unsafe"], r["q16_safe"])})
    best = None
    for low, high in zip(scores, scores[1:]):
        if high - low < 2e-3:
            continue
        threshold = round((low + high) / 2, 4)
        flips = sum(r["q16_unsafe"] >= threshold > r["q16_safe"] for r in rows if r["category"] != "sexual")
        if best is None or flips > best[0]:
            best = (flips, threshold)
    assert best and best[0] > 0, "no Q16 threshold makes a pair flip"
    return best[1]


def _flip_checker(rows, seed=2):
    """A safety checker (random tower and concepts, as diffusers makes it) whose concept with the
    largest unsafe-over-safe margin on one sexual pair gets its threshold between the two images;
    the other concepts and the special-care concepts never fire."""
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    images = [Image.open(io.BytesIO(r[f"{side}_image"]["bytes"])) for r in rows for side in ("unsafe", "safe")]
    processor = jf.pil_processor()
    pixels = torch.cat([processor(images=i, return_tensors="pt").pixel_values for i in images])
    checker = jf.make_safety_checker(pixels, seed=seed)
    with torch.no_grad():
        cos = cosine_distance(jf.checker_embeds(checker, pixels), checker.concept_embeds).numpy()
        special = cosine_distance(jf.checker_embeds(checker, pixels), checker.special_care_embeds).numpy()
    unsafe, safe = cos[0::2], cos[1::2]
    sexual = [i for i, r in enumerate(rows) if r["category"] == "sexual"]
    gap, pair, concept = max((unsafe[i, k] - safe[i, k], i, k) for i in sexual for k in range(17))
    assert gap > 3e-3, "no concept separates a sexual pair"
    threshold = (unsafe[pair, concept] + safe[pair, concept]) / 2 - 0.0005
    assert min(abs(cos[:, concept] - threshold - 0.0005)) > 2e-4
    weights = cos.max(axis=0) + 0.05
    weights[concept] = threshold
    with torch.no_grad():
        checker.concept_embeds_weights.copy_(torch.from_numpy(weights.astype(np.float32)))
        checker.special_care_embeds_weights.copy_(torch.from_numpy((special.max(axis=0) + 0.05).astype(np.float32)))
    return checker


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    work = tmp_path_factory.mktemp("judged-build")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shutil.copy(os.path.join(repo, "samples", "pairs.jsonl"), work / "pairs.jsonl")
    jf.save_q16_tower(str(work / "clip"))
    shutil.copytree(work / "clip", work / "clip-bare")
    os.remove(work / "clip-bare" / "preprocessor_config.json")

    first, done = build(work, "first", manifest(["q16"], 'clip_model = "clip-bare"\nq16_threshold = 0.5', False))
    warnings = [line for line in done.stderr.splitlines() if "preprocessor_config.json" in line]
    assert warnings and "clip-bare" in warnings[0], done.stderr
    assert "preprocessor_config.json" in (first / "README.md").read_text()
    first_rows = rows_of(first)

    threshold = _q16_threshold(first_rows)
    jf.save_safety_checker(str(work / "checker"), _flip_checker(first_rows))
    second, _ = build(work, "second", manifest(
        ["q16", "sd-safety-checker"],
        f'clip_model = "clip"\nq16_threshold = {threshold}\nsafety_checker = "checker"', True))
    return dict(work=work, out=second, rows=rows_of(second), first_rows=first_rows, threshold=threshold)


def flagged(judge, score, threshold):
    return score >= threshold if judge == "q16" else score > 0


def test_both_builds_render_the_same_images_and_q16_scores(judged):
    first, second = judged["first_rows"], judged["rows"]
    assert len(second) == 18
    assert [r["pair_id"] for r in first] == [r["pair_id"] for r in second]
    for a, b in zip(first, second):
        assert a["unsafe_image"]["bytes"] == b["unsafe_image"]["bytes"]
        assert a["safe_image"]["bytes"] == b["safe_image"]["bytes"]
        # CLIP's default preprocessing is what the saved CLIPImageProcessorPil config says.
        assert (a["q16_unsafe"], a["q16_safe"]) == (b["q16_unsafe"], b["q16_safe"])
        assert a["sd_safety_checker_unsafe"] is None and a["nudenet_unsafe"] is None


def test_judge_columns_equal_acs_detect_and_the_references(judged, tmp_path):
    rows, work, threshold = judged["rows"], judged["work"], judged["threshold"]
    paths = []
    for row in rows:
        for side in ("unsafe", "safe"):
            assert row[f"q16_{side}"] is not None and row[f"sd_safety_checker_{side}"] is not None
            assert row[f"nudenet_{side}"] is None
            path = tmp_path / f"{row['pair_id']}-{side}.png"
            path.write_bytes(row[f"{side}_image"]["bytes"])
            paths.append(str(path))
    stored = {"q16": [r[f"q16_{s}"] for r in rows for s in ("unsafe", "safe")],
              "sd-safety-checker": [r[f"sd_safety_checker_{s}"] for r in rows for s in ("unsafe", "safe")]}
    for judge, model, extra in (("q16", work / "clip", ["--threshold", str(threshold)]),
                                ("sd-safety-checker", work / "checker", [])):
        out = subprocess.run([ACS, "detect", "--judge", judge, "--model", str(model), "--json", *extra, *paths],
                             capture_output=True, text=True, check=True)
        ours = json.loads(out.stdout)
        assert max(abs(o["score"] - s) for o, s in zip(ours, stored[judge])) <= 1e-5, judge
        assert [o["flagged"] for o in ours] == [flagged(judge, s, threshold) for s in stored[judge]], judge
    # Q16 against the torch formula on transformers' tower and Pillow processor.
    from transformers import CLIPVisionModelWithProjection

    tower = CLIPVisionModelWithProjection.from_pretrained(str(work / "clip")).eval()
    with torch.no_grad():
        reference = jf.q16_probabilities(tower(pixel_values=jf.pixel_values(paths)).image_embeds)[:, 1].numpy()
    assert np.abs(reference - np.array(stored["q16"])).max() <= 1e-4


def test_valid_is_the_flip_rule_of_each_category(judged):
    rows, threshold = judged["rows"], judged["threshold"]
    flips = {}
    for row in rows:
        judge = FLIP_JUDGE.get(row["category"], "q16")
        column = COLUMN[judge]
        unsafe = flagged(judge, row[f"{column}_unsafe"], threshold)
        safe = flagged(judge, row[f"{column}_safe"], threshold)
        assert row["valid"] == (unsafe and not safe), row["pair_id"]
        if row["valid"]:
            assert row["reject_reasons"] == []
        else:
            assert row["reject_reasons"] and all(r.startswith("no_flip") for r in row["reject_reasons"]), row
        flips.setdefault(judge, []).append(row["valid"])
    print(f"q16 threshold {threshold}; valid pairs per judge: "
          + ", ".join(f"{j} {sum(v)} of {len(v)}" for j, v in sorted(flips.items())))
    for judge, valid in flips.items():
        assert any(valid), f"no pair flips under {judge}"
    assert not all(r["valid"] for r in rows)


def _validate(judged, *extra, cwd):
    out = subprocess.run([ACS, "validate", str(judged["out"]), "--json", *extra], capture_output=True, text=True,
                         cwd=cwd, env=dict(os.environ, ACS_HOME=ACS_HOME))
    assert "panicked" not in out.stderr
    return out, json.loads(out.stdout)


def test_validate_reruns_the_judges_and_fails_as_the_rows_say(judged, tmp_path):
    rows = judged["rows"]
    invalid = sum(not r["valid"] for r in rows)
    assert invalid > 0
    out, report = _validate(judged, cwd=judged["work"])
    assert out.returncode == 1, out.stdout + out.stderr
    assert report["errors"] == [] and report["passed"] is False
    assert (report["rows"], report["valid_rows"], report["invalid_rows"]) == (18, 18 - invalid, invalid)
    assert "q16: re-run" in report["detector"] and "sd-safety-checker: re-run" in report["detector"], report
    for column in ("q16_unsafe", "q16_safe", "sd_safety_checker_unsafe", "sd_safety_checker_safe"):
        assert report["metric_max_abs_diff"][column] <= 1e-6, (column, report["metric_max_abs_diff"])
    out, report = _validate(judged, "--max-invalid-fraction", "1", cwd=judged["work"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert report["passed"] is True and "re-run" in report["detector"]
    # From elsewhere the relative folders are not found: the stored scores are checked instead.
    out, report = _validate(judged, "--max-invalid-fraction", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "re-run" not in report["detector"] and "stored scores" in report["detector"], report


def test_stats_reports_the_flips_of_the_rows(judged):
    rows, threshold = judged["rows"], judged["threshold"]
    out = subprocess.run([ACS, "stats", str(judged["out"]), "--json"], capture_output=True, text=True, check=True)
    flips = json.loads(out.stdout)["flips"]
    expected = {}
    for row in rows:
        judge = FLIP_JUDGE.get(row["category"], "q16")
        column = COLUMN[judge]
        entry = expected.setdefault(row["category"], {"judge": judge, "scored": 0, "unsafe_flagged": 0,
                                                      "safe_flagged": 0, "flipped": 0})
        unsafe = flagged(judge, row[f"{column}_unsafe"], threshold)
        safe = flagged(judge, row[f"{column}_safe"], threshold)
        entry["scored"] += 1
        entry["unsafe_flagged"] += unsafe
        entry["safe_flagged"] += safe
        entry["flipped"] += unsafe and not safe
    assert flips == expected
    assert len(flips) == 7
