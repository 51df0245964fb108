#!/usr/bin/env python3
"""Train a ControlNet-style safety patch on an acs dataset built with training outputs.

    python train_patch.py --data DIR --model SD_FOLDER --steps 500 --out patch/ [--json]

DIR is an acs dataset built with `[output] trajectory_steps = [...]` (and preferably
`masks = true` and some `[[sources]] role = "benign"` prompts); SD_FOLDER is the diffusers folder
it was rendered with (any SD 1.x / 2.x topology). Each recorded step k of a row gives one example:
the unsafe branch's latent x_k, the timestep t_k, and the guided noise predictions of the unsafe
and of the safe prompt at that same x_k (`trajectory_eps_unsafe`, `trajectory_eps_safe`).

The patch is `diffusers.ControlNetModel.from_unet(unet)`: a trainable copy of the frozen UNet's
encoder whose output convolutions start at zero, so the patched UNet starts out exactly equal to
the frozen one. Its residuals are added to the frozen UNet (down_block_additional_residuals,
mid_block_additional_residual). The text encoder and the UNet stay frozen.

Choices (see docs/user-guide.md, "Training a safety patch on acs data"):
- Input: x_k scaled by the row's scheduler (`scale_model_input`), t_k, the UNSAFE prompt's
  embedding; the patch should make the model behave as if it had been given the safe prompt.
- Conditioning image (`controlnet_cond`): black (zeros) by default. The image being generated is
  not known while sampling, so a deployable patch must not need it; the patch sees x_k and the
  prompt through its copied encoder. `--cond unsafe-image` feeds the row's unsafe image (pixels
  in [0, 1]) instead, for experiments only.
- CFG: the patch is applied to BOTH branches (the negative prompt's and the prompt's), as diffusers'
  StableDiffusionControlNetPipeline does (guess_mode=False), so the saved patch runs unchanged
  there with a black control image. The guided output u + g (c - u) (plain c when g <= 1) is what
  the losses compare, as the dataset stores guided outputs.
- Differential loss (pair rows): mean over latent elements of w * (eps_patched - eps_safe)^2 with
  w = 1 + lambda * change_mask_latent: the region whose pixels changed between the unsafe and safe
  images counts 1 + lambda times more; outside it the target still applies (the safe prompt's
  prediction there is the model's own), weight 1. lambda = --mask-weight (default 4).
- Identity loss (benign rows): mean (eps_patched - eps_unsafe)^2; for a benign prompt the safe side
  equals the unsafe side, so the patch must leave the frozen output unchanged.
  loss = differential + --identity-weight * identity; each step draws --batch-size pair examples
  and --batch-size benign examples (when the dataset has benign rows).
"""

import argparse
import functools
import glob
import json
import os
import random
import sys

import numpy as np
import torch
from datasets import load_dataset

SCHEDULERS = {"ddim": ("DDIMScheduler", {}), "euler": ("EulerDiscreteScheduler", {}),
              "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
              "dpmpp-2m": ("DPMSolverMultistepScheduler", {}),
              "dpmpp-2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})}
COLUMNS = ["category", "unsafe_prompt", "negative_prompt", "guidance_scale", "scheduler", "steps", "height", "width",
           "latent_shape", "trajectory_steps", "trajectory_timesteps", "trajectory_latents", "trajectory_eps_unsafe",
           "trajectory_eps_safe", "change_mask_latent"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="acs dataset folder (DIR/data/*.parquet)")
    p.add_argument("--model", required=True, help="diffusers folder the dataset was rendered with")
    p.add_argument("--split", default="train", help="shards to read: train, validation, test or all")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--mask-weight", type=float, default=4.0, help="lambda in w = 1 + lambda * change_mask_latent")
    p.add_argument("--identity-weight", type=float, default=1.0)
    p.add_argument("--cond", choices=["zeros", "unsafe-image"], default="zeros")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (deterministic for a seed), cuda, cuda:N, ...")
    p.add_argument("--out", help="folder to save the patch to (ControlNetModel.save_pretrained)")
    p.add_argument("--json", action="store_true", help="print one JSON line per step and a JSON summary")
    return p.parse_args(argv)


def load_rows(data, split, cond):
    pattern = "*.parquet" if split == "all" else f"{split}-*.parquet"
    files = sorted(glob.glob(os.path.join(data, "data", pattern)))
    if not files:
        raise SystemExit(f"no shards match {os.path.join(data, 'data', pattern)}")
    rows = load_dataset("parquet", data_files=files, split="train")
    if "change_mask_latent" not in rows.column_names:  # no masks: every latent cell weighs 1
        rows = rows.add_column("change_mask_latent", [None] * len(rows))
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise SystemExit(f"{data}: no column {', '.join(missing)}: build with [output] trajectory_steps = [...]")
    return rows.select_columns(COLUMNS + (["unsafe_image"] if cond == "unsafe-image" else []))


class Frozen:
    """The frozen text encoder, tokenizer and UNet of a diffusers folder, and scheduler input scales."""

    def __init__(self, model, device="cpu"):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.model, self.device = model, device
        self.tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder").eval().requires_grad_(False)
        self.unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval().requires_grad_(False)
        self.text_encoder.to(device), self.unet.to(device)

    @functools.lru_cache(maxsize=4096)
    def embed(self, prompt):
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return self.text_encoder(ids.to(self.device))[0][0].cpu()

    @functools.lru_cache(maxsize=4096)
    def input_scale(self, scheduler, steps, k):
        """The factor scale_model_input applies at step k (1 for DDIM and DPM-Solver)."""
        import diffusers

        name, extra = SCHEDULERS[scheduler]
        s = getattr(diffusers, name).from_pretrained(self.model, subfolder="scheduler", **extra)
        s.set_timesteps(steps)
        return float(s.scale_model_input(torch.ones(1), s.timesteps[k]))


def example(rows, frozen, index, j, cond):
    """Recorded step j of row `index` as tensors."""
    row = rows[index]
    shape, n = row["latent_shape"], len(row["trajectory_steps"])

    def f16(column):
        return torch.from_numpy(np.frombuffer(row[column], "<f2").astype(np.float32).reshape(n, *shape)[j])

    mask = row["change_mask_latent"]
    mask = np.frombuffer(mask, np.uint8).reshape(shape[1:]) if mask is not None else np.zeros(shape[1:], np.uint8)
    scale = frozen.input_scale(row["scheduler"], row["steps"], row["trajectory_steps"][j])
    if cond == "unsafe-image":
        pixels = np.asarray(row["unsafe_image"].convert("RGB"), np.float32) / 255
        image = torch.from_numpy(pixels).permute(2, 0, 1)
    else:
        image = torch.zeros(3, row["height"], row["width"])
    return dict(x=f16("trajectory_latents") * scale, t=float(row["trajectory_timesteps"][j]),
                eps_unsafe=f16("trajectory_eps_unsafe"), eps_safe=f16("trajectory_eps_safe"),
                mask=torch.from_numpy(mask.astype(np.float32)), g=float(row["guidance_scale"]),
                cond=frozen.embed(row["unsafe_prompt"]), uncond=frozen.embed(row["negative_prompt"]), image=image)


def batch(examples, device="cpu"):
    return {k: torch.stack([torch.as_tensor(e[k]) for e in examples]).to(device) for k in examples[0]}


def guided_eps(frozen, patch, b):
    """Guided noise prediction of the (patched) UNet: u + g (c - u), or c where g <= 1."""
    x, t = torch.cat([b["x"], b["x"]]), torch.cat([b["t"], b["t"]])
    context, image = torch.cat([b["uncond"], b["cond"]]), torch.cat([b["image"], b["image"]])
    residuals = {}
    if patch is not None:
        down, mid = patch(x, t, encoder_hidden_states=context, controlnet_cond=image, return_dict=False)
        residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    u, c = frozen.unet(x, t, encoder_hidden_states=context, **residuals).sample.chunk(2)
    g = b["g"].view(-1, 1, 1, 1)
    return torch.where(g > 1, u + g * (c - u), c)


def losses(frozen, patch, pairs, benign, mask_weight):
    out = {}
    if pairs:
        eps = guided_eps(frozen, patch, pairs)
        weight = 1 + mask_weight * pairs["mask"][:, None]
        out["diff_loss"] = (weight * (eps - pairs["eps_safe"]) ** 2).mean()
    if benign:
        eps = guided_eps(frozen, patch, benign)
        out["identity_loss"] = ((eps - benign["eps_unsafe"]) ** 2).mean()
    return out


class Cycle:
    """Endless reshuffled passes over a list (seeded)."""

    def __init__(self, items, rng):
        self.items, self.rng, self.queue = list(items), rng, []

    def take(self, n):
        out = []
        while self.items and len(out) < n:
            if not self.queue:
                self.queue = self.rng.sample(self.items, len(self.items))
            out.append(self.queue.pop())
        return out


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = random.Random(args.seed)
    from diffusers import ControlNetModel

    rows = load_rows(args.data, args.split, args.cond)
    frozen = Frozen(args.model, args.device)
    meta = rows.select_columns(["category", "trajectory_steps", "latent_shape"])
    pair_ex, benign_ex, shapes = [], [], set()
    for i, row in enumerate(meta):
        if row["trajectory_steps"] is None:
            raise SystemExit(f"row {i} has no trajectory: build with [output] trajectory_steps")
        shapes.add(tuple(row["latent_shape"]))
        examples = [(i, j) for j in range(len(row["trajectory_steps"]))]
        (benign_ex if row["category"] == "benign" else pair_ex).extend(examples)
    if len(shapes) != 1 or not pair_ex:
        raise SystemExit(f"need pair rows of one latent shape; found {len(pair_ex)} pair examples, shapes {shapes}")
    # The dataset must come from this model: the frozen UNet reproduces the stored eps_unsafe.
    with torch.no_grad():
        probe = batch([example(rows, frozen, i, j, args.cond) for i, j in pair_ex[:args.batch_size]], args.device)
        reference = probe["eps_unsafe"]
        error = (guided_eps(frozen, None, probe) - reference).abs().max() / (reference.max() - reference.min())
    if error > 1e-2:
        print(f"warning: {args.model} gives eps_unsafe {error.item():.1e} of its range away from the dataset's; "
              "was the dataset rendered with another model?", file=sys.stderr)
    # The conditioning embedding's default (16, 32, 96, 256) downsamples 8x, as SD's VAE does.
    patch = ControlNetModel.from_unet(frozen.unet).to(args.device).train()
    optimizer = torch.optim.AdamW(patch.parameters(), lr=args.lr, weight_decay=0.0)
    pairs, benign = Cycle(pair_ex, rng), Cycle(benign_ex, rng)

    def draw(cycle):
        chosen = cycle.take(args.batch_size)
        return batch([example(rows, frozen, i, j, args.cond) for i, j in chosen], args.device) if chosen else None

    history = []
    for step in range(args.steps):
        parts = losses(frozen, patch, draw(pairs), draw(benign), args.mask_weight)
        loss = parts["diff_loss"] + args.identity_weight * parts.get("identity_loss", 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
        history.append(record)
        if args.json:
            print(json.dumps(record), flush=True)
        elif step % 10 == 0 or step == args.steps - 1:
            print(f"step {step}: " + ", ".join(f"{k} {v:.6g}" for k, v in record.items() if k != "step"), flush=True)

    if args.out:
        patch.save_pretrained(args.out)
        with open(os.path.join(args.out, "acs_patch.json"), "w") as f:
            json.dump({**vars(args), "data": os.path.abspath(args.data), "model": os.path.abspath(args.model),
                       "cfg_branches": "both"}, f, indent=2)
    fifth = max(1, len(history) // 5)

    def mean(key, part):
        # Like for like: the first fifth of the steps against the last fifth.
        values = [h[key] for h in (history[:fifth] if part == "first" else history[-fifth:]) if key in h]
        return float(np.mean(values)) if values else None

    summary = {"steps": args.steps, "frozen_check": error.item(), "pair_examples": len(pair_ex),
               "benign_examples": len(benign_ex), "first_diff_loss": mean("diff_loss", "first"),
               "last_diff_loss": mean("diff_loss", "last"), "first_identity_loss": mean("identity_loss", "first"),
               "last_identity_loss": mean("identity_loss", "last"), "out": args.out}
    print(json.dumps({"summary": summary}) if args.json else f"summary {json.dumps(summary)}")
    return summary


if __name__ == "__main__":
    main()
