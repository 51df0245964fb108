"""Trains the shapes demonstrator: the whole Stable Diffusion topology (AutoencoderKL f = 8 with 4
latent channels, UNet2DConditionModel with cross-attention, a CLIP text encoder trained jointly
with the real CLIP tokenizer) on the procedural scenes of scenes.py, on the CPU, seeded, and
saves it in diffusers layout with a training report.

    python scripts/demonstrator/train.py --out OUT_DIR [--checkpoint-every 2500]

Stages: (1) the VAE learns to reconstruct scenes; (2) the scenes are encoded once, and the latent
scale is set so that the latents have unit variance; (3) the UNet and the text encoder learn
epsilon-prediction together (10 % empty captions, for classifier-free guidance), with an
exponential moving average of both, and the pipeline is saved (float16); (4) the VAE's decoder
alone learns on from the saved VAE for 800 steps, the encoder frozen (so the UNet's latent space
stays put): 1,000 steps of stage 1 leave colours and stars poorly decoded. `--refine-only` runs
stage 4 on a folder stages 1-3 wrote, the same computation as in one run (the committed weights
were made so: stages 1-3, then `--refine-only`). Step counts are fixed (not wall time), so a rerun with the
same packages and thread count repeats the run; on this project's 2-core machine the defaults
take about 85 minutes. Held-out (colour, shape, position) combinations (scenes.HELD_OUT) and held-out seeds
(>= 1e9) never appear in training. Needs the pinned packages of tests/python/requirements.txt.
"""

import argparse
import copy
import gzip
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BPE = ROOT / "acs-builder" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
MODEL_ID = "acs/shapes-sd-v1"
IMAGE_SIZE = 64

TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
    attention_head_dim=8, norm_num_groups=32,
)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, block_out_channels=(32, 64, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=IMAGE_SIZE,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder):
    """CLIP's tokenizer folder, built from the BPE file acs embeds (CLIP's own construction)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.decompress(BPE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = dict(bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                   pad_token="<|endoftext|>")
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        dict(tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True, **special)))


def check_vocabulary(tokenizer):
    """Every caption word must be one CLIP token, or a one-word edit would not be one token."""
    report = {}
    for word in scenes.vocabulary():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise SystemExit(f"vocabulary word {word!r} is {len(ids)} CLIP tokens: {ids}")
        report[word] = ids[0]
    return report


def training_pool(count, seed):
    """`count` scenes from consecutive seeds starting at `seed`, without held-out combinations."""
    images, captions, scene_seed = [], [], seed
    while len(images) < count:
        scene = scenes.draw_scene(scene_seed)
        scene_seed += 1
        if scene.is_held_out():
            continue
        images.append(scene.render(IMAGE_SIZE))
        captions.append(scene.caption())
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pixels, captions, scene_seed - seed


def to_unit(pixels):
    return pixels.float() / 127.5 - 1.0


def log(report, message):
    print(message, flush=True)
    report.setdefault("log", []).append(message)


def train_vae(vae, pixels, args, report):
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 1)
    losses, step, start = [], 0, time.time()
    vae.train()
    while step < args.vae_steps:
        set_lr(optimizer, [args.vae_lr], step, args.vae_steps, args.warmup)
        index = torch.randint(0, pixels.shape[0], (args.vae_batch,), generator=generator)
        x = to_unit(pixels[index])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        kl = posterior.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        loss = mse + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(mse.item())
        step += 1
        if step % 50 == 0:
            log(report, f"vae step {step}: mse {np.mean(losses[-50:]):.5f} ({time.time() - start:.0f} s)")
    vae.eval()
    return losses


def set_lr(optimizer, base_rates, step, total, warmup):
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        factor = (step + 1) / warmup
    else:
        factor = 0.1 + 0.45 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for group, rate in zip(optimizer.param_groups, base_rates):
        group["lr"] = rate * factor


def refine_decoder(folder, pixels, args, report):
    """Stage 4: the VAE's decoder alone learns on, from the saved (float16) VAE, with the encoder
    frozen: the latent space the UNet learned does not move, the images it decodes to do."""
    from diffusers import AutoencoderKL

    torch.set_num_threads(args.refine_threads)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").float()
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=args.refine_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 3)
    losses, step, start = [], 0, time.time()
    vae.train()
    while step < args.refine_steps:
        set_lr(optimizer, [args.refine_lr], step, args.refine_steps, args.warmup // 4)
        index = torch.randint(0, pixels.shape[0], (args.vae_batch,), generator=generator)
        x = to_unit(pixels[index])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        mse = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
        optimizer.zero_grad(set_to_none=True)
        mse.backward()
        optimizer.step()
        losses.append(mse.item())
        step += 1
        if step % 50 == 0:
            log(report, f"decoder step {step}: mse {np.mean(losses[-50:]):.5f} ({time.time() - start:.0f} s)")
    vae.eval()
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    save_f16(folder / "vae")
    report["decoder_refinement"] = {"steps": len(losses), "seconds": round(time.time() - start, 1),
                                    "final_mse": float(np.mean(losses[-50:]))}
    return losses


@torch.no_grad()
def encode_pool(vae, pixels, batch=256):
    means = []
    for i in range(0, pixels.shape[0], batch):
        means.append(vae.encode(to_unit(pixels[i:i + batch])).latent_dist.mean)
    return torch.cat(means)


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


def train_diffusion(unet, text_encoder, tokenizer, latents, captions, args, report, checkpoint):
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                       if k not in ("set_alpha_to_one", "steps_offset")})
    params = [{"params": unet.parameters(), "lr": args.unet_lr},
              {"params": text_encoder.parameters(), "lr": args.text_lr}]
    optimizer = torch.optim.AdamW(params, weight_decay=1e-4)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for module in (ema_unet, ema_text):
        module.requires_grad_(False)
    all_ids = tokenizer(captions + [""], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
    empty_ids, caption_ids = all_ids[-1], all_ids[:-1]
    generator = torch.Generator().manual_seed(args.seed + 2)
    losses, step, start = [], 0, time.time()
    unet.train()
    text_encoder.train()
    while step < args.steps:
        set_lr(optimizer, [args.unet_lr, args.text_lr], step, args.steps, args.warmup)
        index = torch.randint(0, latents.shape[0], (args.batch,), generator=generator)
        ids = caption_ids[index].clone()
        dropped = torch.rand(args.batch, generator=generator) < args.caption_dropout
        ids[dropped] = empty_ids
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (args.batch,), generator=generator)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        states = text_encoder(ids).last_hidden_state
        pred = unet(noisy, t, encoder_hidden_states=states).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(text_encoder.parameters()), 1.0)
        optimizer.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        losses.append(loss.item())
        if step % 100 == 0:
            log(report, f"diffusion step {step}: loss {np.mean(losses[-100:]):.5f} ({time.time() - start:.0f} s)")
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < args.steps:
            checkpoint(ema_unet, ema_text, step)
    return losses, ema_unet, ema_text


def plot_losses(path, vae_losses, diffusion_losses, decoder_losses=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(values, window):
        values = np.asarray(values)
        if len(values) < window:
            return values
        return np.convolve(values, np.ones(window) / window, mode="valid")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(smooth(vae_losses, 20), label="VAE (stage 1)")
    if len(decoder_losses):
        curve = smooth(decoder_losses, 20)
        axes[0].plot(np.arange(len(vae_losses), len(vae_losses) + len(curve)), curve, label="decoder (stage 4)")
        axes[0].legend()
    axes[0].set(title="VAE reconstruction (MSE, [-1, 1] pixels)", xlabel="step", yscale="log")
    axes[1].plot(smooth(diffusion_losses, 50))
    axes[1].set(title="UNet + text encoder (epsilon MSE)", xlabel="step", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save_f16(pipe_dir):
    """Rewrites every safetensors file of the folder in float16 (where they keep the scores)."""
    from safetensors.torch import load_file, save_file
    for path in sorted(pipe_dir.rglob("*.safetensors")):
        tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(path).items()}
        save_file(tensors, path, metadata={"format": "pt"})


def file_hashes(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "training-report.json"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--pool", type=int, default=40000)
    parser.add_argument("--vae-steps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--checkpoint-every", type=int, default=2500)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--unet-lr", type=float, default=6e-4)
    parser.add_argument("--text-lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refine-steps", type=int, default=800,
                        help="stage 4's steps (0: no stage 4)")
    parser.add_argument("--refine-threads", type=int, default=2,
                        help="stage 4's torch threads (its results depend on the count)")
    parser.add_argument("--refine-lr", type=float, default=1e-3)
    parser.add_argument("--refine-only", action="store_true",
                        help="run stage 4 alone on the finished --out folder (a run made in two invocations)")
    args = parser.parse_args()

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.refine_only:
        return refine_only(args)
    began = time.time()
    report = {"model_id": MODEL_ID, "args": {k: str(v) for k, v in vars(args).items()},
              "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cpus",
              "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    work = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    write_tokenizer(work / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(work / "tokenizer")
    report["vocabulary_token_ids"] = check_vocabulary(tokenizer)
    report["held_out_combinations"] = [list(c) for c in scenes.HELD_OUT]

    pixels, captions, seeds_used = training_pool(args.pool, 0)
    report["training_scenes"] = {"count": len(captions), "seeds": [0, seeds_used],
                                 "skipped_held_out": seeds_used - len(captions)}
    log(report, f"pool: {len(captions)} scenes from seeds 0..{seeds_used} ({time.time() - began:.0f} s)")

    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    report["parameters"] = {name: sum(p.numel() for p in m.parameters())
                            for name, m in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))}

    stage = time.time()
    vae_losses = train_vae(vae, pixels, args, report)
    report["vae"] = {"steps": len(vae_losses), "seconds": round(time.time() - stage, 1),
                     "final_mse": float(np.mean(vae_losses[-50:]))}

    stage = time.time()
    latents = encode_pool(vae, pixels)
    scale = float(1.0 / latents.std())
    latents = latents * scale
    vae.register_to_config(scaling_factor=scale)
    report["latents"] = {"scaling_factor": scale, "seconds": round(time.time() - stage, 1)}
    log(report, f"latent scale {scale:.5f}")

    stage = time.time()
    def save_pipeline(folder, ema_unet, ema_text):
        scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=ema_text, tokenizer=tokenizer, unet=ema_unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(folder, safe_serialization=True)
        index = json.loads((folder / "model_index.json").read_text())
        index["_name_or_path"] = MODEL_ID
        (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        save_f16(folder)

    def checkpoint(ema_unet, ema_text, step):
        folder = args.out.with_name(f"{args.out.name}.step{step}")
        shutil.rmtree(folder, ignore_errors=True)
        save_pipeline(folder, ema_unet, ema_text)
        log(report, f"checkpoint {folder}")

    diffusion_losses, ema_unet, ema_text = train_diffusion(
        unet, text_encoder, tokenizer, latents, captions, args, report, checkpoint)
    report["diffusion"] = {"steps": len(diffusion_losses), "seconds": round(time.time() - stage, 1),
                           "final_loss": float(np.mean(diffusion_losses[-100:]))}

    save_pipeline(work, ema_unet, ema_text)
    decoder_losses = refine_decoder(work, pixels, args, report) if args.refine_steps else []
    plot_losses(work / "loss.png", vae_losses, diffusion_losses, decoder_losses)
    report["wall_seconds"] = round(time.time() - began, 1)
    report["configs"] = {"unet": UNET_CONFIG, "vae": VAE_CONFIG, "text_encoder": TEXT_CONFIG,
                         "scheduler": SCHEDULER_CONFIG}
    report["files"] = file_hashes(work)
    (work / "training-report.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    work.rename(args.out)
    log(report, f"wrote {args.out} in {report['wall_seconds']:.0f} s")


def refine_only(args):
    """Stage 4 on a folder stages 1-3 wrote (the same computation as in one run: stage 4 starts
    from the saved float16 VAE either way); updates its report, hashes and loss plot."""
    folder = args.out
    report = json.loads((folder / "training-report.json").read_text())
    began = time.time()
    pixels, _, _ = training_pool(args.pool, 0)
    decoder_losses = refine_decoder(folder, pixels, args, report)
    report["args"]["refine_steps"] = str(args.refine_steps)
    report["args"]["refine_lr"] = str(args.refine_lr)
    report["args"]["refine_threads"] = str(args.refine_threads)
    report["wall_seconds"] = round(report["wall_seconds"] + time.time() - began, 1)
    report["wall_note"] = "stages 1-3 and stage 4 ran as two invocations (--refine-only); the sum"
    losses = report_losses(report)
    plot_losses(folder / "loss.png", losses["vae"], losses["diffusion"], decoder_losses)
    report["files"] = file_hashes(folder)
    (folder / "training-report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(report, f"refined the decoder of {folder} in {time.time() - began:.0f} s")


def report_losses(report):
    """The stage 1 / 2 loss curves from the report's log lines (every 50 / 100 steps)."""
    vae, diffusion = [], []
    for line in report.get("log", []):
        if line.startswith("vae step"):
            vae += [float(line.split("mse ")[1].split()[0])] * 50
        elif line.startswith("diffusion step"):
            diffusion += [float(line.split("loss ")[1].split()[0])] * 100
    return {"vae": vae, "diffusion": diffusion}


if __name__ == "__main__":
    main()
