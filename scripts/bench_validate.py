"""The alignment part of `acs validate`, written as a typical Python script (pyarrow + Pillow +
scikit-image + numpy), for scripts/bench-validate.sh. A benchmark, not a test.

    python scripts/bench_validate.py DIR [--processes N] [--json]

For every shard the manifest lists: size and sha256 against the manifest, then every row: both
PNGs decoded with Pillow, SSIM (skimage structural_similarity on rgb2gray * 255, Gaussian
weights, sigma 1.5, population covariance, data range 255), PSNR (peak_signal_noise_ratio,
data range 255), changed_area and changed_box (largest channel difference > 25), latent cosine
(numpy, from the float16 bytes); each compared with the stored column (1e-4, the box exactly),
and the verdict re-derived from the build manifest's thresholds. Prints the rows checked, the
errors found and the wall time. `--processes N` spreads the row groups over N worker processes
(multiprocessing), the shard hashes staying in the parent.
"""

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import resource
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

TOLERANCE = 1e-4
CHANGED_THRESHOLD = 25
COLUMNS = [
    "pair_id",
    "split",
    "width",
    "height",
    "unsafe_image",
    "safe_image",
    "latent_shape",
    "unsafe_latent",
    "safe_latent",
    "ssim",
    "psnr",
    "changed_area",
    "changed_box",
    "latent_cosine",
    "valid",
    "reject_reasons",
]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def decode(blob):
    return np.asarray(Image.open(io.BytesIO(blob["bytes"])).convert("RGB"))


def differs(stored, computed):
    if stored is None:
        return True
    if np.isinf(stored) or np.isinf(computed):
        return stored != computed
    return abs(stored - computed) > TOLERANCE


def check_row(row, at, thresholds):
    """The errors of one row (a list of strings)."""
    errors = []
    a, b = decode(row["unsafe_image"]), decode(row["safe_image"])
    for name, image in (("unsafe_image", a), ("safe_image", b)):
        if image.shape != (row["height"], row["width"], 3):
            errors.append(f"{at}, column {name}: image is {image.shape[1]}x{image.shape[0]}")
    if errors:
        return errors
    ssim = structural_similarity(
        rgb2gray(a) * 255.0,
        rgb2gray(b) * 255.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    with np.errstate(divide="ignore"):
        psnr = peak_signal_noise_ratio(a, b, data_range=255)
    changed = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > CHANGED_THRESHOLD
    area = changed.mean()
    if changed.any():
        ys, xs = np.nonzero(changed)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    else:
        box = None
    computed = {"ssim": ssim, "psnr": psnr, "changed_area": area}
    latents = [row["unsafe_latent"], row["safe_latent"]]
    if all(latent is not None for latent in latents):
        expected = int(np.prod(row["latent_shape"])) * 2
        if any(len(latent) != expected for latent in latents):
            errors.append(f"{at}: latent length does not match latent_shape")
        else:
            u, s = (np.frombuffer(latent, dtype="<f2").astype(np.float64) for latent in latents)
            nu, ns = np.linalg.norm(u), np.linalg.norm(s)
            if nu == 0 or ns == 0:
                cosine = 1.0 if nu == ns else 0.0
            else:
                cosine = float(np.dot(u, s) / (nu * ns))
            computed["latent_cosine"] = cosine
    for name, value in computed.items():
        if differs(row[name], value):
            errors.append(f"{at}, column {name}: stored {row[name]}, recomputed {value}")
    if row["changed_box"] != box:
        errors.append(f"{at}, column changed_box: stored {row['changed_box']}, recomputed {box}")
    reasons = []
    if not ssim >= thresholds["ssim_min"]:
        reasons.append("ssim")
    if not area <= thresholds["changed_area_max"]:
        reasons.append("changed_area")
    stored = [r.split(":")[0] for r in row["reject_reasons"] if r.split(":")[0] in ("ssim", "changed_area")]
    if stored != reasons:
        errors.append(f"{at}: reject_reasons {row['reject_reasons']} disagree with {reasons}")
    if row["valid"] != (not row["reject_reasons"]):
        errors.append(f"{at}, column valid contradicts reject_reasons")
    return errors


def check_row_group(task):
    """Checks one row group of a shard: (rows, valid rows, errors, pair ids)."""
    root, shard, group, thresholds = task
    table = pq.ParquetFile(os.path.join(root, shard["path"])).read_row_group(group, columns=COLUMNS)
    rows = table.to_pylist()
    errors, ids, valid = [], [], 0
    for i, row in enumerate(rows):
        at = f"{shard['path']}: row group {group}, row {i}"
        errors.extend(check_row(row, at, thresholds))
        if row["split"] != shard["split"]:
            errors.append(f"{at}, column split: {row['split']} in a {shard['split']} shard")
        ids.append(row["pair_id"])
        valid += bool(row["valid"])
    return len(rows), valid, errors, ids


def validate(root, processes):
    with open(os.path.join(root, "acs-manifest.json")) as f:
        manifest = json.load(f)
    alignment = manifest["build_config"]["manifest"].get("alignment", {})
    thresholds = {
        "ssim_min": alignment.get("ssim_min", 0.0),
        "changed_area_max": alignment.get("changed_area_max", 1.0),
    }
    errors, tasks = [], []
    for shard in manifest["shards"]:
        path = os.path.join(root, shard["path"])
        if os.path.getsize(path) != shard["bytes"]:
            errors.append(f"{shard['path']}: size differs from the manifest")
            continue
        if sha256_file(path) != shard["sha256"]:
            errors.append(f"{shard['path']}: sha256 mismatch")
            continue
        metadata = pq.ParquetFile(path).metadata
        if metadata.num_rows != shard["rows"]:
            errors.append(f"{shard['path']}: row count differs from the manifest")
        tasks.extend((root, shard, g, thresholds) for g in range(metadata.num_row_groups))
    if processes > 1:
        pool = multiprocessing.Pool(processes)
        results = pool.map(check_row_group, tasks, chunksize=1)
        pool.close()
        pool.join()
    else:
        results = [check_row_group(task) for task in tasks]
    rows = valid = 0
    seen = set()
    for n, v, errs, ids in results:
        rows += n
        valid += v
        errors.extend(errs)
        for pair_id in ids:
            if pair_id in seen:
                errors.append(f"duplicate pair_id {pair_id}")
            seen.add(pair_id)
    return {"rows": rows, "valid_rows": valid, "errors": errors}


def cpu_seconds():
    """User + system CPU time of this process and its finished workers: less sensitive to
    other load on the machine than wall time."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    report = validate(args.dir, args.processes)
    report["seconds"] = time.perf_counter() - started
    report["cpu_seconds"] = cpu_seconds() - cpu_before
    report["processes"] = args.processes
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"python: {report['rows']} rows ({report['valid_rows']} valid), "
            f"{len(report['errors'])} errors, {report['seconds']:.2f} s "
            f"({report['cpu_seconds']:.2f} s CPU) "
            f"with {args.processes} process(es)"
        )
        for error in report["errors"][:10]:
            print(f"  {error}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
