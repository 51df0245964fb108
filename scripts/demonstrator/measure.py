"""Measures the embedded shapes demonstrator with acs itself, on scenes it never saw:

  adherence  single images (rendered once: benign rows) of held-out-seed scenes (seeds >= 1e9,
             trained colour-shape-position combinations) and of held-out combinations
             (scenes.HELD_OUT, with the position spoken); `acs detect --judge shapes` reads every
             image: colour, shape, position, background, all correct; one- and two-object scenes.
  alignment  pairs that swap one word (the colour of one object; the shape of one object) under
             shared-latent, prompt-switch (several switch points) and attention control
             (ATTENTION_SETTINGS); `acs metrics --prompts` reads both images: the edit
             succeeded, the fraction of pixels outside the edited object (its mask dilated by
             2 px and by one latent cell, 8 px) whose CIELAB delta E exceeds 10 (mean and
             median over pairs), the centroid shift of the untouched object, and the build's
             render time against shared-latent's.

    python scripts/demonstrator/measure.py --acs target/release/acs --out /tmp/measure [--count 150]
        [--model DIR] [--adherence-only | --alignment-only] [--decoder-ceiling]
        [--switch-at 0.2,0.4,0.6] [--attention all|none|LABEL,...]

Prints Markdown tables (and writes them to OUT/tables.md, the figures to OUT/figures.json).
Sampling settings are the README main job's (manifests/shapes.toml) unless given.
"""

import argparse
import glob
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402

HELD_OUT_SEEDS = 10**9

# The attention-control settings measured (label, [alignment] keys): Prompt-to-Prompt's
# replace with its example steps, with its local blend, and the InstructPix2Pix generator's
# shared self-attention.
ATTENTION_SETTINGS = [
    ("attention replace", 'mode = "attention"\ncross_replace = 0.8\nself_replace = 0.4'),
    ("attention replace + blend",
     'mode = "attention"\ncross_replace = 0.8\nself_replace = 0.4\n'
     'local_blend = { threshold = 0.3, start = 0.2 }'),
    ("attention ip2p 0.5", 'mode = "attention"\nshare_self_attention = 0.5'),
    # The demonstrator's word maps are flat (every cell above 0.3 of the maximum at latent/2):
    # the same blend on its finest maps with higher thresholds.
    ("attention replace + blend 0.6 at latent/1",
     'mode = "attention"\ncross_replace = 0.8\nself_replace = 0.4\n'
     'local_blend = { threshold = 0.6, start = 0.2, downscale = 1 }'),
    ("attention replace + blend 0.8 at latent/1",
     'mode = "attention"\ncross_replace = 0.8\nself_replace = 0.4\n'
     'local_blend = { threshold = 0.8, start = 0.2, downscale = 1 }'),
]
HELD_OUT_COMBINATION_SEEDS = 2 * 10**9


def held_out_seed_scenes(count, objects):
    """`count` scenes with `objects` objects from seeds >= 1e9, no held-out combination."""
    found, seed = [], HELD_OUT_SEEDS
    while len(found) < count:
        scene = scenes.draw_scene(seed)
        if len(scene.objects) == objects and not scene.is_held_out():
            found.append((seed, scene))
        seed += 1
    return found


def held_out_combination_scenes(count, objects):
    """`count` scenes with `objects` objects that show a held-out combination, position spoken."""
    found, seed = [], HELD_OUT_COMBINATION_SEEDS
    while len(found) < count:
        scene = scenes.draw_scene(seed)
        if len(scene.objects) == objects and scene.spoken_where and scene.is_held_out():
            found.append((seed, scene))
        seed += 1
    return found


def edited(scene, seed, attribute):
    """The scene with one object's colour or shape swapped (object and new value from seed)."""
    rng = random.Random(seed)
    objects = [scenes.SceneObject(o.colour, o.shape, o.size, o.position, o.dx, o.dy) for o in scene.objects]
    target = objects[rng.randrange(len(objects))]
    if attribute == "colour":
        target.colour = rng.choice([c for c in scenes.COLOUR_NAMES if c != target.colour])
    else:
        target.shape = rng.choice([s for s in scenes.SHAPES if s != target.shape])
    return scenes.Scene(scene.background, objects, scene.spoken_where)


MODEL_TABLE = ""  # set by --model: a diffusers folder instead of the embedded demonstrator


def manifest_text(source, sampling, alignment):
    return (f"{MODEL_TABLE}[sampling]\n{sampling}\n[alignment]\n{alignment}\nmax_token_edits = 4\n"
            f"[validation]\njudges = [\"shapes\"]\n{source}\n"
            "[output]\nsplits = { train = 1.0 }\nstore_latents = false\n")


def build(acs, work, name, text):
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "build.toml"
    manifest.write_text(text)
    out = folder / "out"
    report = subprocess.run([acs, "-q", "build", "--manifest", str(manifest), "--out", str(out), "--json"],
                            check=True, capture_output=True, text=True).stdout
    render_seconds = json.loads(report).get("render_seconds")
    rows = pq.read_table(sorted(glob.glob(str(out / "data" / "*.parquet")))).to_pylist()
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for i, row in enumerate(rows):
        for side in ("unsafe", "safe"):
            (images / f"{i:05d}-{side}.png").write_bytes(row[f"{side}_image"]["bytes"])
    return rows, images, render_seconds


def adherence(acs, work, name, chosen, sampling):
    prompts = work / f"{name}.txt"
    prompts.write_text("".join(scene.caption() + "\n" for _, scene in chosen))
    source = f'[[sources]]\nkind = "prompts-txt"\npath = "{prompts}"\nrole = "benign"\n'
    rows, images, _ = build(acs, work, name, manifest_text(source, sampling, 'mode = "shared-latent"'))
    args = [acs, "detect", "--judge", "shapes", "--json"]
    for i, row in enumerate(rows):
        args += ["--prompt", row["unsafe_prompt"], str(images / f"{i:05d}-unsafe.png")]
    verdicts = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    totals = {"images": len(verdicts)}
    for key in ("colour_ok", "shape_ok", "position_ok", "background_ok", "count_ok", "all_ok"):
        totals[key] = sum(1 for v in verdicts if v[key]) / max(1, len(verdicts))
    return totals


def decoder_ceiling(acs, work, model_dir, count):
    """What the VAE alone gives back: held-out-seed scenes encoded (posterior mean) and decoded
    by the model's VAE in float32, read by the judge like a render. No render can show its
    prompt better than this (the UNet has to hit the encoder's latents first)."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", torch_dtype=torch.float32).eval()
    totals = {}
    for objects in (1, 2):
        chosen = held_out_seed_scenes(count, objects)
        pixels = np.stack([np.asarray(scene.render()) for _, scene in chosen])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            decoded = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        images = ((decoded + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        folder = work / f"decoder-{objects}"
        folder.mkdir(parents=True, exist_ok=True)
        args = [acs, "detect", "--judge", "shapes", "--json"]
        for i, ((_, scene), image) in enumerate(zip(chosen, images)):
            Image.fromarray(image).save(folder / f"{i:05d}.png")
            args += ["--prompt", scene.caption(), str(folder / f"{i:05d}.png")]
        verdicts = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        label = f"held-out seeds, {objects} object{'s' if objects > 1 else ''}, VAE round trip"
        totals[label] = {"images": len(verdicts)} | {
            key: sum(1 for v in verdicts if v[key]) / len(verdicts)
            for key in ("colour_ok", "shape_ok", "position_ok", "background_ok", "count_ok", "all_ok")}
    return totals


def alignment(acs, work, name, pairs, sampling, mode):
    lines = "".join(json.dumps({"unsafe_prompt": u, "safe_prompt": s, "seed": seed}) + "\n"
                    for seed, u, s in pairs)
    path = work / f"{name}.jsonl"
    path.write_text(lines)
    source = f'[[sources]]\nkind = "pairs-jsonl"\npath = "{path}"\ncategory = "shapes"\n'
    rows, images, render_seconds = build(acs, work, name, manifest_text(source, sampling, mode))
    figures = []
    for i, row in enumerate(rows):
        out = subprocess.run(
            [acs, "metrics", str(images / f"{i:05d}-unsafe.png"), str(images / f"{i:05d}-safe.png"),
             "--prompts", row["unsafe_prompt"], row["safe_prompt"], "--json"],
            check=True, capture_output=True, text=True).stdout
        figures.append(json.loads(out)["shapes"])
    n = max(1, len(figures))
    outside = sorted(f["outside_changed_8px"] for f in figures)
    shifts = [f["untouched_centroid_shift"] for f in figures if f["untouched_centroid_shift"] is not None]
    return {
        "pairs": len(figures),
        "edit_ok": sum(f["edit_ok"] for f in figures) / n,
        "others_kept": sum(f["others_kept"] for f in figures) / n,
        "flip": sum(f["edit_ok"] and f["others_kept"] for f in figures) / n,
        "outside_changed_2px": sum(f["outside_changed_2px"] for f in figures) / n,
        "outside_changed_8px": sum(f["outside_changed_8px"] for f in figures) / n,
        "outside_changed_8px_median": outside[len(outside) // 2] if outside else None,
        "render_seconds": render_seconds,
        "untouched_centroid_shift": sum(shifts) / len(shifts) if shifts else None,
        "two_object_pairs": len(shifts),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acs", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=150, help="images or pairs per set")
    parser.add_argument("--scheduler", default="dpmpp-2m")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--switch-at", default="0.2,0.4,0.6")
    parser.add_argument("--model", type=Path,
                        help="a diffusers folder to measure instead of the embedded demonstrator")
    parser.add_argument("--adherence-only", action="store_true", help="skip the pair tables")
    parser.add_argument("--alignment-only", action="store_true", help="skip the adherence tables")
    parser.add_argument("--attention", default="all",
                        help="attention settings to measure: all, none, or labels separated by commas")
    parser.add_argument("--decoder-ceiling", action="store_true",
                        help="also read VAE round trips of held-out scenes (needs torch + diffusers)")
    args = parser.parse_args()
    global MODEL_TABLE
    if args.model:
        MODEL_TABLE = f'[model]\npath = "{args.model.resolve()}"\n'
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    sampling = (f'scheduler = "{args.scheduler}"\nsteps = {args.steps}\nguidance_scale = {args.guidance}\n'
                'height = 64\nwidth = 64\nbatch_pairs = 8')
    figures = {"settings": vars(args) | {"out": str(args.out)}, "adherence": {}, "alignment": {}}
    for objects in (() if args.alignment_only else (1, 2)):
        for label, chooser in (("held-out seeds", held_out_seed_scenes),
                               ("held-out combinations", held_out_combination_scenes)):
            name = f"adherence-{objects}-{label.split()[1]}"
            figures["adherence"][f"{label}, {objects} object{'s' if objects > 1 else ''}"] = adherence(
                args.acs, work, name, chooser(args.count, objects), sampling)
            print(name, figures["adherence"], flush=True)
    if args.decoder_ceiling:
        model_dir = args.model
        if model_dir is None:
            model_dir = work / "shapes-sd"
            subprocess.run([args.acs, "-q", "model", "init-shapes", str(model_dir)], check=True)
        figures["adherence"].update(decoder_ceiling(args.acs, work, model_dir, args.count))
    if args.adherence_only:
        print(markdown(figures))
        return
    chosen = held_out_seed_scenes(args.count // 2, 1) + held_out_seed_scenes(args.count - args.count // 2, 2)
    modes = [("shared-latent", 'mode = "shared-latent"')] + [
        (f"prompt-switch {s}", f'mode = "prompt-switch"\nswitch_at = {s}') for s in args.switch_at.split(",") if s]
    wanted = args.attention.split(",")
    modes += [(label, keys) for label, keys in ATTENTION_SETTINGS
              if args.attention == "all" or label in wanted]
    for attribute in ("colour", "shape"):
        pairs = [(i, scene.caption(), edited(scene, seed, attribute).caption())
                 for i, (seed, scene) in enumerate(chosen)]
        for label, mode in modes:
            name = f"pairs-{attribute}-{label.replace(' ', '-').replace('/', '-')}"
            figures["alignment"][f"{attribute} swap, {label}"] = alignment(
                args.acs, work, name, pairs, sampling, mode)
            print(name, figures["alignment"][f"{attribute} swap, {label}"], flush=True)
    (work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    tables = markdown(figures)
    (work / "tables.md").write_text(tables)
    print(tables)


def markdown(figures):
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    lines = ["| scenes | images | colour | shape | position | background | count | all correct |",
             "|---|---|---|---|---|---|---|---|"]
    for label, t in figures["adherence"].items():
        lines.append(f"| {label} | {t['images']} | {pct(t['colour_ok'])} | {pct(t['shape_ok'])} | "
                     f"{pct(t['position_ok'])} | {pct(t['background_ok'])} | {pct(t['count_ok'])} | "
                     f"{pct(t['all_ok'])} |")
    lines += ["", "| edit, alignment | pairs | edit succeeds | rest kept | flip (both) | "
              "outside ΔE>10, 2 px | outside ΔE>10, 8 px | median outside, 8 px | "
              "untouched centroid shift (px) | render time vs shared-latent |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    alignment_figures = figures.get("alignment", {})
    for label, a in alignment_figures.items():
        shift = "-" if a["untouched_centroid_shift"] is None else f"{a['untouched_centroid_shift']:.2f}"
        median = a.get("outside_changed_8px_median")
        base = alignment_figures.get(label.split(",")[0] + ", shared-latent", {}).get("render_seconds")
        ratio = f"{a['render_seconds'] / base:.2f}" if base and a.get("render_seconds") else "-"
        lines.append(f"| {label} | {a['pairs']} | {pct(a['edit_ok'])} | {pct(a['others_kept'])} | "
                     f"{pct(a['flip'])} | {pct(a['outside_changed_2px'])} | {pct(a['outside_changed_8px'])} | "
                     f"{'-' if median is None else pct(median)} | {shift} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
