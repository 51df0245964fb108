"""`acs metrics` against scikit-image and numpy on image pairs made here: several sizes (from
smaller than the SSIM window to 512x517) and kinds (noise, smooth gradients, natural images from
skimage.data with local edits, identical and unrelated images).

SSIM: skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255) on rgb2gray(img) * 255, within 1e-4. skimage
refuses images with a side under the 11-pixel window; acs then averages the whole (uncropped)
map, which is compared with the same formula written with scipy.ndimage. PSNR:
peak_signal_noise_ratio(data_range=255) within 1e-3 dB (identical images: infinite, printed as
null). changed_area and changed_box: a numpy version of the documented definition (a pixel
changed when its largest channel difference exceeds 25), exactly.
"""

import io
import json
import subprocess
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage import data
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import required_env

# (width, height): two below the window, the window itself, and larger ones of odd shapes.
SIZES = [(7, 9), (9, 30), (11, 11), (64, 64), (100, 37), (256, 256), (333, 517), (512, 512)]
THRESHOLD = 25
SSIM_TOLERANCE = 1e-4
PSNR_TOLERANCE = 1e-3


def noise(rng, w, h):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def gradient(w, h, phase=0.0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [
        127 + 100 * np.sin(x / max(w, 1) * 3.1 + phase) * np.cos(y / max(h, 1) * 2.3),
        40 + 200 * (x + y) / max(w + h - 2, 1),
        127 + 90 * np.cos((x - y) / 9.0 + phase),
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).round().astype(np.uint8)


def natural(w, h, which):
    image = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea}[which]()
    ih, iw = image.shape[:2]
    if iw >= w and ih >= h:
        y0, x0 = (ih - h) // 2, (iw - w) // 2
        return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w])
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def paste_patch(image, rng):
    out = image.copy()
    h, w = image.shape[:2]
    ph, pw = max(1, h // 4), max(1, w // 5)
    y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    out[y0 : y0 + ph, x0 : x0 + pw] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return out


def blur_region(image):
    h, w = image.shape[:2]
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(4)))
    out = image.copy()
    out[h // 3 : 2 * h // 3 + 1, w // 4 : 3 * w // 4 + 1] = blurred[
        h // 3 : 2 * h // 3 + 1, w // 4 : 3 * w // 4 + 1
    ]
    return out


def brighten(image, delta):
    return np.clip(image.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def jpeg(image, quality):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def small_noise(image, rng, amplitude):
    shift = rng.integers(-amplitude, amplitude + 1, size=image.shape)
    return np.clip(image.astype(np.int16) + shift, 0, 255).astype(np.uint8)


def pairs():
    """(name, unsafe, safe) for every size and kind; deterministic."""
    rng = np.random.default_rng(20261128)
    naturals = ["astronaut", "coffee", "chelsea"]
    out = []
    for k, (w, h) in enumerate(SIZES):
        a = noise(rng, w, h)
        out.append((f"{w}x{h} unrelated noise", a, noise(rng, w, h)))
        out.append((f"{w}x{h} identical noise", a, a.copy()))
        out.append((f"{w}x{h} noise +-6", a, small_noise(a, rng, 6)))
        g = gradient(w, h)
        out.append((f"{w}x{h} gradient vs shifted phase", g, gradient(w, h, phase=0.4)))
        out.append((f"{w}x{h} gradient pasted patch", g, paste_patch(g, rng)))
        n = natural(w, h, naturals[k % len(naturals)])
        out.append((f"{w}x{h} natural pasted patch", n, paste_patch(n, rng)))
        out.append((f"{w}x{h} natural blurred region", n, blur_region(n)))
        out.append((f"{w}x{h} natural brightness +30", n, brighten(n, 30)))
        out.append((f"{w}x{h} natural jpeg q30", n, jpeg(n, 30)))
        out.append((f"{w}x{h} natural vs gradient", n, g))
    return out


def reference_ssim(a, b):
    """skimage's SSIM (same settings); for images under the window, the same formula over the
    whole map, with scipy's filter as skimage calls it."""
    x = rgb2gray(a) * 255.0
    y = rgb2gray(b) * 255.0
    if min(x.shape) >= 11:
        return structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
    f = lambda v: ndimage.gaussian_filter(v, sigma=1.5, truncate=3.5, mode="reflect")
    ux, uy, uxx, uyy, uxy = f(x), f(y), f(x * x), f(y * y), f(x * y)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(dtype=np.float64)


def reference_changes(a, b):
    changed = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > THRESHOLD
    area = changed.sum() / changed.size
    if not changed.any():
        return area, None
    ys, xs = np.nonzero(changed)
    return area, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def write_png(path, image):
    Image.fromarray(image).save(path, format="PNG")


def acs_metrics(*args):
    return subprocess.run(
        [required_env("ACS_BIN"), "metrics", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_metrics_match_scikit_image_and_numpy(tmp_path):
    cases = pairs()
    assert len(cases) >= 60
    worst = {"ssim": 0.0, "psnr": 0.0}
    failures = []
    started = time.perf_counter()
    for i, (name, a, b) in enumerate(cases):
        pa, pb = tmp_path / f"{i:03d}-unsafe.png", tmp_path / f"{i:03d}-safe.png"
        write_png(pa, a)
        write_png(pb, b)
        done = acs_metrics(pa, pb, "--json")
        assert done.returncode == 0, f"{name}: {done.stderr}"
        got = json.loads(done.stdout)
        h, w = a.shape[:2]
        assert (got["width"], got["height"]) == (w, h), name

        ssim = reference_ssim(a, b)
        ssim_diff = abs(got["ssim"] - ssim)
        worst["ssim"] = max(worst["ssim"], ssim_diff)
        if ssim_diff > SSIM_TOLERANCE:
            failures.append(f"{name}: ssim {got['ssim']} vs {ssim}")

        with np.errstate(divide="ignore"):
            psnr = peak_signal_noise_ratio(a, b, data_range=255)
        got_psnr = float("inf") if got["psnr"] is None else got["psnr"]
        if np.isinf(psnr) or np.isinf(got_psnr):
            if psnr != got_psnr:
                failures.append(f"{name}: psnr {got_psnr} vs {psnr}")
        else:
            worst["psnr"] = max(worst["psnr"], abs(got_psnr - psnr))
            if abs(got_psnr - psnr) > PSNR_TOLERANCE:
                failures.append(f"{name}: psnr {got_psnr} vs {psnr}")

        area, box = reference_changes(a, b)
        # acs prints the float32 it stores; compare in float32.
        if np.float32(got["changed_area"]) != np.float32(area):
            failures.append(f"{name}: changed_area {got['changed_area']} vs {area}")
        if got["changed_box"] != box:
            failures.append(f"{name}: changed_box {got['changed_box']} vs {box}")
    elapsed = time.perf_counter() - started
    print(
        f"{len(cases)} pairs in {elapsed:.1f} s; max |ssim diff| {worst['ssim']:.3e}, "
        f"max |psnr diff| {worst['psnr']:.3e} dB"
    )
    assert not failures, "\n".join(failures)


def test_metrics_refuses_mismatched_or_undecodable_images(tmp_path):
    rng = np.random.default_rng(1)
    write_png(tmp_path / "a.png", noise(rng, 20, 16))
    write_png(tmp_path / "b.png", noise(rng, 16, 20))
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    done = acs_metrics(tmp_path / "a.png", tmp_path / "b.png", "--json")
    assert done.returncode == 2
    assert "b.png" in done.stderr and "16x20" in done.stderr, done.stderr
    done = acs_metrics(tmp_path / "junk.png", tmp_path / "a.png")
    assert done.returncode == 2
    assert "junk.png" in done.stderr, done.stderr
    done = acs_metrics(tmp_path / "a.png", tmp_path / "missing.png")
    assert done.returncode == 2
    assert "missing.png" in done.stderr, done.stderr


def test_metrics_prints_a_table(tmp_path):
    image = gradient(32, 24)
    write_png(tmp_path / "a.png", image)
    write_png(tmp_path / "b.png", paste_patch(image, np.random.default_rng(2)))
    done = acs_metrics(tmp_path / "a.png", tmp_path / "b.png")
    assert done.returncode == 0, done.stderr
    for key in ("ssim", "psnr", "changed_area", "changed_box"):
        assert key in done.stdout
