"""Times acs's Q16 judge (CLIP ViT-L/14 tower in Rust, Pillow-exact preprocessing) and
transformers on the same CPU, same weights, same images, in one run, and prints images per
second on both sides and the ratio. A benchmark, not a test.

    scripts/bench-judges.sh [--images N] [--size PX] [--batch N] [--threads N] [--models DIR]

The tower is CLIP ViT-L/14-sized (hidden 1024, 24 layers, 16 heads, MLP 4096, patch 14, 224 px,
quick GELU, projection 768) with random weights, built by transformers as a
CLIPVisionModelWithProjection and saved once into DIR (default ~/.cache/acs/bench-models). The
images are N PNGs of PX x PX (scikit-image photographs, scaled and cropped).

acs: `acs detect --judge q16 --model DIR --json IMAGES...` as a whole process, timed for N images
and for 1 image (after one untimed 1-image run, so that both read the weights from the page
cache); per-image time = (t_N - t_1) / (N - 1), and loading (process start, weights,
first image) is t_1 less one per-image time. transformers: `from_pretrained` timed apart, then
batches of `batch` images: open the PNG, CLIPImageProcessorPil, the tower (float32,
torch.no_grad, torch.set_num_threads), the Q16 formula; one untimed warm-up image first. acs is
given the same thread count through RAYON_NUM_THREADS."""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = os.path.join(os.path.dirname(HERE), "acs-builder", "assets", "q16-vit-l-14-prompts.npy")
VIT_L_14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu")


def cached_tower(models):
    """The random ViT-L/14 tower folder, made once (about 1.2 GB)."""
    folder = os.path.join(models, "clip-vit-l-14-random-seed0")
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return folder
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    print(f"saving a random CLIP ViT-L/14 tower into {folder} (once)", file=sys.stderr)
    torch.manual_seed(0)
    partial = folder + ".partial"
    CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L_14)).save_pretrained(partial)
    CLIPImageProcessorPil().save_pretrained(partial)
    os.replace(partial, folder)
    return folder


def write_images(folder, count, size):
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.cat()]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        image = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BICUBIC)
        path = os.path.join(folder, f"image-{i:03d}.png")
        image.save(path)
        paths.append(path)
    return paths


class OtherLoad:
    """CPU time other processes used while a side ran (from /proc/stat less this process and its
    children), so that a figure measured on a busy machine can be told apart."""

    def __enter__(self):
        self.start = (self._busy(), self._own())
        return self

    def __exit__(self, *exc):
        busy, own = self._busy(), self._own()
        self.core_seconds = max(0.0, (busy - self.start[0]) - (own - self.start[1]))

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return 0.0
        # user nice system idle iowait irq softirq steal ...
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def run_acs(acs, tower, paths, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))

    def timed(images):
        start = time.perf_counter()
        done = subprocess.run([acs, "detect", "--judge", "q16", "--model", tower, "--json", *images],
                              capture_output=True, text=True, env=env, check=True)
        return time.perf_counter() - start, json.loads(done.stdout)

    timed(paths[:1])  # warm-up, untimed: the 1.2 GB weights into the page cache
    one, _ = timed(paths[:1])
    whole, result = timed(paths)
    per_image = (whole - one) / (len(paths) - 1)
    return {"whole": whole, "one": one, "load": one - per_image, "per_image": per_image,
            "scores": np.array([r["probabilities"][1] for r in result])}


def run_transformers(tower, paths, threads, batch):
    import torch
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = CLIPVisionModelWithProjection.from_pretrained(tower, dtype=torch.float32).eval()
    processor = CLIPImageProcessorPil.from_pretrained(tower)
    load = time.perf_counter() - start
    prompts = torch.from_numpy(np.load(PROMPTS).astype(np.float32))
    prompts = prompts / prompts.norm(dim=-1, keepdim=True)

    def q16(images):
        pixels = processor(images=images, return_tensors="pt").pixel_values
        embeds = model(pixel_values=pixels).image_embeds
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return torch.softmax(100.0 * embeds @ prompts.T, dim=-1)[:, 1]

    with torch.no_grad():
        q16([Image.open(paths[0])])  # warm-up, untimed
        scores = []
        start = time.perf_counter()
        for first in range(0, len(paths), batch):
            scores.append(q16([Image.open(p) for p in paths[first:first + batch]]))
        run = time.perf_counter() - start
    return {"load": load, "run": run, "per_image": run / len(paths), "scores": torch.cat(scores).numpy()}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--models", default=os.path.expanduser("~/.cache/acs/bench-models"))
    parser.add_argument("--acs", required=True)
    args = parser.parse_args()
    if args.images < 2:
        parser.error("--images must be at least 2")
    import torch
    import transformers

    os.makedirs(args.models, exist_ok=True)
    tower = cached_tower(args.models)
    with tempfile.TemporaryDirectory() as work:
        paths = write_images(work, args.images, args.size)
        with OtherLoad() as acs_load:
            ours = run_acs(args.acs, tower, paths, args.threads)
        with OtherLoad() as torch_load:
            theirs = run_transformers(tower, paths, args.threads, args.batch)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"config: random CLIP ViT-L/14 tower, Q16, {args.images} PNGs of {args.size}x{args.size}, float32, "
          f"transformers batch {args.batch} (CLIPImageProcessorPil included)")
    print(f"acs: whole process {ours['whole']:.2f} s for {args.images} images, {ours['one']:.2f} s for 1 image")
    print(f"{'':26}{'acs':>10}{'transformers':>14}{'acs / transformers':>20}")
    print(f"{'load model (s)':26}{ours['load']:10.2f}{theirs['load']:14.2f}{ours['load'] / theirs['load']:20.2f}")
    print(f"{'per image (s)':26}{ours['per_image']:10.3f}{theirs['per_image']:14.3f}"
          f"{ours['per_image'] / theirs['per_image']:20.2f}")
    print(f"{'images per second':26}{1 / ours['per_image']:10.2f}{1 / theirs['per_image']:14.2f}"
          f"{theirs['per_image'] / ours['per_image']:20.2f} (speed-up)")
    print(f"CPU time of other processes while each side ran: acs {acs_load.core_seconds:.1f} core-s, "
          f"transformers {torch_load.core_seconds:.1f} core-s (near 0 on an idle machine)")
    print(f"max |Q16 P(inappropriate) acs - transformers| = {np.abs(ours['scores'] - theirs['scores']).max():.2e}")


if __name__ == "__main__":
    sys.exit(main())
