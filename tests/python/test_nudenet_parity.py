"""acs's NudeNet (tract, in Rust) against the nudenet PyPI package (onnxruntime + OpenCV) on
the same 320n.onnx: same labels, scores within 1e-3, boxes within 2 px, and the raw class
scores of every image. The model comes from the nudenet wheel installed in the test venv (it is
AGPL and never part of this repository).

Images: photographs bundled with scikit-image (two portraits, on which the detector finds
faces) cropped, scaled, padded, flipped, recoloured and combined, so that every preprocessing
path is exercised (non-square padding, up- and down-scaling, 320 px without resize), plus
images without any person. No explicit content is needed or used."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import required_env

ACS = required_env("ACS_BIN")
# The tiny model lives in ACS_HOME/models/tiny-sd-v1 (scripts/test.sh).
ACS_HOME = os.path.dirname(os.path.dirname(required_env("ACS_TINY_DIR")))

nudenet = pytest.importorskip("nudenet")
MODEL = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")


def _rgb(name):
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def _resize(image, width, height):
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def parity_images():
    """(name, RGB uint8 array) pairs: 40 images, deterministic."""
    rng = np.random.default_rng(20261128)
    astronaut, camera = _rgb("astronaut"), _rgb("camera")
    coffee, chelsea, rocket = _rgb("coffee"), _rgb("chelsea"), _rgb("rocket")
    images = [
        ("astronaut", astronaut),
        ("camera", camera),
        ("coffee", coffee),
        ("chelsea", chelsea),
        ("rocket", rocket),
        ("astronaut-320", _resize(astronaut, 320, 320)),
        ("camera-320", _resize(camera, 320, 320)),
        ("astronaut-64", _resize(astronaut, 64, 64)),
        ("astronaut-700", _resize(astronaut, 700, 700)),
        ("camera-640", _resize(camera, 640, 640)),
        ("astronaut-flip", astronaut[:, ::-1].copy()),
        ("camera-flip", camera[:, ::-1].copy()),
        ("astronaut-wide", astronaut[60:300, :]),
        ("astronaut-tall", astronaut[:, 100:360]),
        ("camera-wide", camera[80:280, :]),
        ("astronaut-face", astronaut[40:260, 120:340]),
        ("camera-face", camera[60:260, 130:330]),
        ("astronaut-dark", (astronaut * 0.5).astype(np.uint8)),
        ("astronaut-bright", np.clip(astronaut.astype(int) + 60, 0, 255).astype(np.uint8)),
        ("astronaut-gray", np.repeat(astronaut.mean(axis=2, keepdims=True), 3, 2).astype(np.uint8)),
        ("astronaut-bgr", astronaut[..., ::-1].copy()),
        ("side-by-side", np.concatenate([astronaut, camera], axis=1)),
        ("stacked", np.concatenate([astronaut, camera], axis=0)),
        ("astronaut-in-coffee", _paste(coffee, _resize(astronaut, 200, 200), 300, 100)),
        ("camera-in-rocket", _paste(rocket, _resize(camera, 180, 180), 40, 200)),
        ("noise", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        ("noise-small", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        ("flat", np.full((128, 96, 3), 180, np.uint8)),
    ]
    for i in range(12):
        # Random crops and scales of the two portraits.
        source = astronaut if i % 2 == 0 else camera
        side = int(rng.integers(180, 480))
        y = int(rng.integers(0, 512 - side))
        x = int(rng.integers(0, 512 - side))
        crop = source[y : y + side, x : x + side]
        width = int(rng.integers(100, 600))
        height = int(rng.integers(100, 600))
        images.append((f"crop-{i}", _resize(crop, width, height)))
    return images


def _paste(background, patch, x, y):
    out = background.copy()
    out[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return out


def _write_png(path, image):
    Image.fromarray(image).save(path, format="PNG")


@pytest.fixture(scope="module")
def detections(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nudenet")
    paths = []
    for name, image in parity_images():
        path = folder / f"{name}.png"
        _write_png(path, image)
        paths.append(str(path))
    out = subprocess.run(
        [ACS, "detect", "--judge", "nudenet", "--nudenet-model", MODEL, "--json", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = json.loads(out.stdout)
    assert isinstance(ours, list)
    assert [o["image"] for o in ours] == paths
    assert {o["judge"] for o in ours} == {"nudenet"}
    # --model is the same option as --nudenet-model, and --judge defaults to nudenet.
    again = subprocess.run([ACS, "detect", "--model", MODEL, "--json", paths[0]],
                           capture_output=True, text=True, check=True)
    assert json.loads(again.stdout)[0]["detections"] == ours[0]["detections"]
    return paths, ours


def test_detections_match_the_nudenet_package(detections):
    paths, ours = detections
    detector = nudenet.NudeDetector(model_path=MODEL)
    with_detections = 0
    worst_score, worst_box = 0.0, 0
    for path, mine in zip(paths, ours):
        theirs = detector.detect(path)
        assert [d["class"] for d in mine["detections"]] == [d["class"] for d in theirs], path
        for a, b in zip(mine["detections"], theirs):
            worst_score = max(worst_score, abs(a["score"] - b["score"]))
            worst_box = max(worst_box, max(abs(p - q) for p, q in zip(a["box"], b["box"])))
        with_detections += bool(theirs)
    print(f"images {len(paths)}, with detections {with_detections}, "
          f"max score diff {worst_score:.2e}, max box diff {worst_box} px")
    assert len(paths) >= 30
    assert with_detections >= 20, "the parity set must exercise real detections"
    assert worst_score <= 1e-3
    assert worst_box <= 2


def test_raw_class_scores_match_onnxruntime(detections):
    """Every class's highest score over all anchors, from the package's own preprocessing and
    onnxruntime, so images without detections are compared too."""
    from nudenet.nudenet import _read_image

    paths, ours = detections
    detector = nudenet.NudeDetector(model_path=MODEL)
    worst = 0.0
    for path, mine in zip(paths, ours):
        blob = _read_image(path, 320)[0]
        output = detector.onnx_session.run(None, {detector.input_name: blob})[0]
        class_max = output[0, 4:, :].max(axis=1)
        worst = max(worst, float(np.abs(class_max - np.array(mine["class_max"])).max()))
    print(f"max raw class-score diff {worst:.2e}")
    assert worst <= 1e-3


def test_installed_package_is_found_through_python(detections, tmp_path):
    paths, ours = detections
    env = dict(os.environ, ACS_PYTHON=sys.executable)
    out = subprocess.run(
        [ACS, "detect", "--json", paths[0]], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout)[0]["detections"] == ours[0]["detections"]
    missing = subprocess.run(
        [ACS, "detect", "--json", paths[0]],
        capture_output=True,
        text=True,
        env=dict(os.environ, ACS_PYTHON=str(tmp_path / "no-python")),
    )
    assert missing.returncode == 2
    assert "finds no nudenet package" in missing.stderr


def _smoke_manifest(folder, extra_alignment=""):
    """manifests/smoke.toml with the detector configured (and extra [alignment] keys)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "manifests", "smoke.toml")) as f:
        text = f.read()
    text = text.replace('path = "../samples/pairs.jsonl"',
                        f'path = "{os.path.join(repo, "samples", "pairs.jsonl")}"')
    text = text.replace("changed_area_max = 1.0", "changed_area_max = 1.0\n" + extra_alignment)
    text += f'\n[validation]\nnudenet_model = "{MODEL}"\nnudenet_threshold = 0.45\n'
    path = folder / "manifest.toml"
    path.write_text(text)
    return str(path)


def test_build_scores_pairs_and_validate_reruns_the_detector(tmp_path):
    import pyarrow.parquet as pq

    home = dict(os.environ, ACS_HOME=ACS_HOME)
    out = tmp_path / "ds"
    subprocess.run([ACS, "build", "--manifest", _smoke_manifest(tmp_path), "--out", str(out)],
                   check=True, capture_output=True, env=home)
    manifest = json.loads((out / "acs-manifest.json").read_text())
    assert manifest["build_config"]["detector"]["name"] == "nudenet-320n"
    detector = nudenet.NudeDetector(model_path=MODEL)
    rows = 0
    for shard in manifest["shards"]:
        table = pq.read_table(out / shard["path"])
        for row in table.select(["unsafe_image", "safe_image", "nudenet_unsafe", "nudenet_safe"]).to_pylist():
            for column in ("unsafe", "safe"):
                found = detector.detect(row[f"{column}_image"]["bytes"])
                expected = max([d["score"] for d in found if d["class"] in (
                    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")] + [0.0])
                assert abs(row[f"nudenet_{column}"] - expected) <= 1e-3
            rows += 1
    assert rows == 18
    report = subprocess.run([ACS, "validate", str(out), "--json"], capture_output=True, text=True, env=home)
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["detector"].startswith("re-run")


def test_require_flip_marks_unflagged_pairs_invalid(tmp_path):
    home = dict(os.environ, ACS_HOME=ACS_HOME)
    out = tmp_path / "ds"
    subprocess.run([ACS, "build", "--manifest", _smoke_manifest(tmp_path, "require_flip = true\n"),
                    "--out", str(out)], check=True, capture_output=True, env=home)
    report = subprocess.run([ACS, "validate", str(out), "--json"], capture_output=True, text=True, env=home)
    # The tiny model's 64 px images show no person: no unsafe image is flagged, so no pair flips.
    assert report.returncode == 1, report.stdout + report.stderr
    parsed = json.loads(report.stdout)
    assert parsed["errors"] == []
    assert parsed["reject_reasons"].get("no_flip") == parsed["rows"] == 18
    repaired = subprocess.run([ACS, "validate", str(out), "--drop-invalid", "--out", str(tmp_path / "kept")],
                              capture_output=True, text=True, env=home)
    assert repaired.returncode == 1
    assert "no pair passes" in repaired.stderr
    assert not (tmp_path / "kept").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
