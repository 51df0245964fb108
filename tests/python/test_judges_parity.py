"""acs's CLIP judges (Q16 and the Stable Diffusion safety checker, both in Rust) against their
references on identical random weights: transformers' CLIPImageProcessorPil (pixel values, bit
for bit) and CLIPVisionModelWithProjection (image embeddings), the Q16 formula in torch
(probabilities and flags), and diffusers' StableDiffusionSafetyChecker (flags, rounded concept
and special-care scores). Also the folder layouts acs accepts (CLIPVisionModelWithProjection,
CLIPModel, a safety_checker folder, a pipeline folder, no preprocessor_config.json) and the
folders it refuses (exit 2, one `error:` line naming the folder and the reason).

The models are written by transformers / diffusers themselves with random weights (see
judge_factory.py); the images are scikit-image's sample photographs at many sizes, gradients,
noise and flat images, nothing explicit."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import required_env
import judge_factory as jf

ACS = required_env("ACS_BIN")

# transformers 5's default CLIPImageProcessor resizes with torchvision, not Pillow. On these
# images it differs from the Pillow processor (and so from acs) by at most 0.0300 in normalised
# units: 2 levels of 255 in the green channel (1 level = 1 / (255 * std) = 0.0142 to 0.0150);
# 0.25 % of all values differ by 1 level, 5 values by 2 (measured 2026-11-29, torch 2.15,
# transformers 5.24). The stated tolerance is 0.05 (3 levels).
TORCHVISION_TOLERANCE = 0.05


def detect(judge, model, paths, *extra, check=True):
    """Runs `acs detect --json`; returns (parsed array, completed process)."""
    out = subprocess.run([ACS, "detect", "--judge", judge, "--model", str(model), "--json", *extra, *paths],
                         capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
        assert "panicked" not in out.stderr, out.stderr
    parsed = json.loads(out.stdout) if out.returncode == 0 else None
    if parsed is not None:
        assert isinstance(parsed, list) and [o["image"] for o in parsed] == [str(p) for p in paths]
        assert {o["judge"] for o in parsed} == {judge}
    return parsed, out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(paths, the PIL processor's pixel values [n, 3, 224, 224])."""
    folder = tmp_path_factory.mktemp("judge-images")
    paths = jf.write_images(str(folder))
    return paths, jf.pixel_values(paths)


@pytest.fixture(scope="module")
def q16(tmp_path_factory, images):
    """A CLIPVisionModelWithProjection folder and a CLIPModel folder with the same vision weights;
    acs's output on every image from the first (with embeddings and pixels)."""
    from transformers import CLIPVisionModelWithProjection

    folder = tmp_path_factory.mktemp("q16")
    tower_dir, clip_dir = folder / "tower", folder / "clip-model"
    jf.save_q16_tower(str(tower_dir))
    tower = CLIPVisionModelWithProjection.from_pretrained(str(tower_dir)).eval()
    jf.save_clip_model(str(clip_dir), tower)
    paths, _ = images
    pixels_file = folder / "pixels.safetensors"
    ours, out = detect("q16", tower_dir, paths, "--embeddings", "--pixels", str(pixels_file))
    assert out.stderr.strip() == "", out.stderr
    return dict(tower_dir=tower_dir, clip_dir=clip_dir, tower=tower, ours=ours,
                pixels=load_file(str(pixels_file))["pixel_values"])


@pytest.fixture(scope="module")
def checker(tmp_path_factory, images):
    """A safety checker saved by diffusers (flat folder and pipeline layout), reloaded from disk;
    acs's output on every image from the flat folder."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    folder = tmp_path_factory.mktemp("checker")
    paths, pixels = images
    made = jf.make_safety_checker(pixels)
    flat, pipeline = folder / "safety_checker", folder / "pipeline"
    jf.save_safety_checker(str(flat), made)
    jf.save_pipeline_layout(str(pipeline), made)
    loaded = StableDiffusionSafetyChecker.from_pretrained(str(flat)).eval()
    pixels_file = folder / "pixels.safetensors"
    ours, out = detect("sd-safety-checker", flat, paths, "--embeddings", "--pixels", str(pixels_file))
    assert out.stderr.strip() == "", out.stderr
    return dict(flat=flat, pipeline=pipeline, model=loaded, ours=ours,
                pixels=load_file(str(pixels_file))["pixel_values"])


def test_pixel_values_match_the_pil_processor(images, q16, checker):
    paths, reference = images
    assert len(paths) >= 40
    for pixels in (q16["pixels"], checker["pixels"]):
        assert pixels.dtype == np.float32 and pixels.shape == (len(paths), 3, 224, 224)
        worst = np.abs(pixels - reference.numpy()).reshape(len(paths), -1).max(axis=1)
        bad = {os.path.basename(p): float(w) for p, w in zip(paths, worst) if w != 0}
        assert not bad, f"pixel values differ from CLIPImageProcessorPil: {bad}"
    print(f"pixel values: {len(paths)} images, max |acs - CLIPImageProcessorPil| = 0")


def test_torchvision_processor_stays_within_the_stated_tolerance(images, q16):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor()
    assert "Pil" not in type(processor).__name__
    paths, _ = images
    theirs = jf.pixel_values(paths, processor).numpy()
    diff = np.abs(q16["pixels"] - theirs)
    worst = float(diff.max())
    levels = np.round(diff * np.float32(jf.CLIP_STD).reshape(1, 3, 1, 1) * 255)
    print(f"max |acs - CLIPImageProcessor (torchvision)| = {worst:.4f} (tolerance {TORCHVISION_TOLERANCE}); "
          f"{(levels.reshape(len(paths), -1).max(axis=1) > 0).sum()} of {len(paths)} images differ by a level "
          f"or more; values 1 level off: {(levels == 1).mean() * 100:.2f} %, 2 or more: {int((levels >= 2).sum())}")
    assert worst <= TORCHVISION_TOLERANCE


def _relative(ours, reference):
    ours, reference = np.asarray(ours, np.float64), reference.numpy().astype(np.float64)
    return np.abs(ours - reference).max(axis=1) / np.abs(reference).max(axis=1)


def test_q16_embeddings_match_transformers(images, q16):
    _, pixels = images
    with torch.no_grad():
        reference = q16["tower"](pixel_values=pixels).image_embeds
    relative = _relative([o["image_embeds"] for o in q16["ours"]], reference)
    print(f"Q16 image embeddings: max |diff| / max |reference| = {relative.max():.2e} (per image, worst)")
    assert all(len(o["image_embeds"]) == 768 for o in q16["ours"])
    assert relative.max() <= 1e-4


def test_q16_probabilities_and_flags_match_the_formula(images, q16):
    paths, pixels = images
    with torch.no_grad():
        reference = jf.q16_probabilities(q16["tower"](pixel_values=pixels).image_embeds).numpy()
    ours = np.array([o["probabilities"] for o in q16["ours"]])
    worst = float(np.abs(ours - reference).max())
    flagged = [o["flagged"] for o in q16["ours"]]
    print(f"Q16 probabilities: max |diff| = {worst:.2e}; flagged {sum(flagged)} of {len(paths)}")
    assert worst <= 1e-4
    # score is P(inappropriate) (JSON prints the same float32 at two precisions).
    assert np.array_equal(np.float32([o["score"] for o in q16["ours"]]), np.float32(ours[:, 1]))
    clear = np.abs(reference[:, 1] - 0.5) > 1e-4
    assert clear.sum() >= len(paths) - 1
    assert np.array_equal(np.array(flagged)[clear], (reference[:, 1] >= 0.5)[clear])
    assert 0 < sum(flagged) < len(paths), "the random tower must put images on both sides of 0.5"
    # --threshold moves the flag and nothing else.
    threshold = float(np.median(reference[:, 1])) + 1e-3
    again, _ = detect("q16", q16["tower_dir"], paths, "--threshold", str(threshold))
    assert [o["score"] for o in again] == [o["score"] for o in q16["ours"]]
    assert [o["flagged"] for o in again] == [o["score"] >= threshold for o in again]


def test_clip_model_layout_gives_the_same_results(images, q16):
    paths, _ = images
    ours, out = detect("q16", q16["clip_dir"], paths, "--embeddings")
    assert out.stderr.strip() == "", out.stderr
    assert ours == q16["ours"]


def test_safety_checker_matches_diffusers(images, checker):
    paths, pixels = images
    model, ours = checker["model"], checker["ours"]
    _, has_nsfw = model(clip_input=pixels, images=np.zeros((len(paths), 8, 8, 3)))
    special, concept, flags = jf.checker_scores(model, pixels)
    assert flags == list(has_nsfw), "the copied loop must give diffusers' own flags"
    assert [o["flagged"] for o in ours] == list(has_nsfw)
    assert [o["nsfw"] for o in ours] == list(has_nsfw)
    concept_ours = np.array([o["concept_scores"] for o in ours])
    special_ours = np.array([o["special_scores"] for o in ours])
    assert concept_ours.shape == (len(paths), 17) and special_ours.shape == (len(paths), 3)
    concept_diff, special_diff = np.abs(concept_ours - concept), np.abs(special_ours - special)
    print(f"safety checker: flagged {sum(flags)} of {len(paths)}, special care on {(special > 0).any(1).sum()}; "
          f"concept scores max |diff| = {concept_diff.max():.1e} ({(concept_diff > 1e-6).sum()} of "
          f"{concept_diff.size} not equal), special scores max |diff| = {special_diff.max():.1e}")
    assert concept_diff.max() <= 1e-3 + 1e-6 and special_diff.max() <= 1e-3 + 1e-6
    assert (concept_diff > 1e-6).mean() <= 0.01
    assert np.allclose([o["score"] for o in ours], concept_ours.max(axis=1), atol=1e-7)
    assert 0 < sum(flags) < len(paths)
    assert (special > 0).any(), "the 0.01 special-care adjustment must be exercised"
    with torch.no_grad():
        reference = jf.checker_embeds(model, pixels)
    relative = _relative([o["image_embeds"] for o in ours], reference)
    print(f"safety checker image embeddings: max relative |diff| = {relative.max():.2e}")
    assert relative.max() <= 1e-4


def test_pipeline_layout_gives_the_same_results(images, checker):
    paths, _ = images
    ours, out = detect("sd-safety-checker", checker["pipeline"], paths, "--embeddings")
    assert out.stderr.strip() == "", out.stderr
    assert ours == checker["ours"]
    # The safety_checker/ folder of a pipeline alone: its processor is in ../feature_extractor.
    ours, out = detect("sd-safety-checker", checker["pipeline"] / "safety_checker", paths, "--embeddings")
    assert out.stderr.strip() == "", out.stderr
    assert ours == checker["ours"]


def test_missing_preprocessor_config_uses_clip_defaults_and_says_so(images, q16, checker, tmp_path):
    paths, _ = images
    bare = tmp_path / "tower-without-processor"
    shutil.copytree(q16["tower_dir"], bare)
    os.remove(bare / "preprocessor_config.json")
    ours, out = detect("q16", bare, paths, "--embeddings")
    assert ours == q16["ours"]
    assert "warning" in out.stderr and "preprocessor_config.json" in out.stderr and str(bare) in out.stderr
    bare_checker = tmp_path / "checker-without-processor"
    shutil.copytree(checker["flat"], bare_checker)
    os.remove(bare_checker / "preprocessor_config.json")
    ours, out = detect("sd-safety-checker", bare_checker, paths, "--embeddings")
    assert ours == checker["ours"]
    assert "warning" in out.stderr and "preprocessor_config.json" in out.stderr


def test_text_output_is_one_line_per_image(images, q16, checker):
    paths, _ = images
    for judge, model in (("q16", q16["tower_dir"]), ("sd-safety-checker", checker["flat"])):
        out = subprocess.run([ACS, "detect", "--judge", judge, "--model", str(model), *paths[:5]],
                             capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        assert len(lines) == 5
        for line, path in zip(lines, paths):
            assert line.startswith(path) and judge in line


UNUSUAL = ["chelsea-translucent-rgba", "chelsea-palette-trns", "chelsea-grey-alpha", "chelsea-rgb16",
           "chelsea-rgba16", "ramp-grey16"]


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_pngs_are_converted_like_transformers(name, tmp_path, q16):
    path = dict(jf.unusual_pngs(str(tmp_path)))[name]
    detect("q16", q16["tower_dir"], [path], "--pixels", str(tmp_path / "p.safetensors"))
    ours = load_file(str(tmp_path / "p.safetensors"))["pixel_values"]
    assert float(np.abs(ours - jf.pixel_values([path]).numpy()).max()) == 0


# --- options and pipes ------------------------------------------------------------------------

@pytest.mark.parametrize("judge,extra,needle", [
    ("sd-safety-checker", ["--threshold", "0.3"], "--threshold"),
    ("q16", ["--threshold", "1.5"], "[0, 1]"),
    ("nudenet", ["--embeddings"], "--embeddings"),
    ("nudenet", ["--pixels", "p.safetensors"], "--pixels"),
])
def test_options_a_judge_would_ignore_are_refused(judge, extra, needle, images, q16, checker, tmp_path):
    model = {"q16": q16["tower_dir"], "sd-safety-checker": checker["flat"], "nudenet": "installed"}[judge]
    out = subprocess.run([ACS, "detect", "--judge", judge, "--model", str(model), "--json", *extra, images[0][0]],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and needle in out.stderr and out.stdout == ""
    assert not (tmp_path / "p.safetensors").exists()


def test_embeddings_need_json(images, q16):
    out = subprocess.run([ACS, "detect", "--judge", "q16", "--model", str(q16["tower_dir"]), "--embeddings",
                          images[0][0]], capture_output=True, text=True)
    assert out.returncode == 2 and "--json" in out.stderr and out.stdout == ""


def test_a_reader_closing_the_pipe_early_is_not_a_crash(images, q16):
    acs = subprocess.Popen([ACS, "detect", "--judge", "q16", "--model", str(q16["tower_dir"]), "--json",
                            "--embeddings", *images[0][:8]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acs.stdout.read(100)
    acs.stdout.close()
    stderr = acs.stderr.read().decode()
    assert acs.wait() == 0, stderr
    assert "panicked" not in stderr and stderr == ""


# --- folders acs must refuse ------------------------------------------------------------------

def _make_bad_folder(case, path, tower, checker):
    from safetensors.torch import load_file as load_torch, save_file
    from transformers import ViTConfig, ViTModel

    if case.startswith("vit-config"):
        torch.manual_seed(0)
        ViTModel(ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=14, image_size=224)).save_pretrained(str(path))
        jf.pil_processor().save_pretrained(str(path))
    elif case == "projection-512":
        jf.save_q16_tower(str(path), projection_dim=512)
    elif case.startswith("pickle-only"):
        source = tower if case.endswith("q16") else checker
        os.makedirs(path)
        for name in ("config.json", "preprocessor_config.json"):
            shutil.copy(source / name, path)
        torch.save(load_torch(str(source / "model.safetensors")), str(path / "pytorch_model.bin"))
    elif case == "checker-without-concept-embeds":
        shutil.copytree(checker, path)
        tensors = load_torch(str(checker / "model.safetensors"))
        del tensors["concept_embeds"]
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    elif case == "q16-tower-as-checker":
        shutil.copytree(tower, path)
    else:
        raise ValueError(case)


BAD_FOLDERS = {
    # case: (judge, words the error line must hold besides the folder)
    "vit-config-q16": ("q16", ["vit"]),
    "vit-config-checker": ("sd-safety-checker", ["vit"]),
    "projection-512": ("q16", ["768", "512"]),
    "pickle-only-q16": ("q16", ["pickle", "pytorch_model.bin"]),
    "pickle-only-checker": ("sd-safety-checker", ["pickle", "pytorch_model.bin"]),
    "checker-without-concept-embeds": ("sd-safety-checker", ["concept_embeds"]),
    "q16-tower-as-checker": ("sd-safety-checker", ["concept_embeds"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_model_folder_is_one_error_line(case, images, q16, checker, tmp_path):
    judge, words = BAD_FOLDERS[case]
    folder = tmp_path / case
    _make_bad_folder(case, folder, q16["tower_dir"], checker["flat"])
    paths, _ = images
    _, out = detect(judge, folder, paths[:2], check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "panicked" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and str(folder) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert out.stdout == ""
