"""Small Stable Diffusion folders with random weights, written in diffusers layout by diffusers
itself, for the parity tests: reduced-channel copies of the SD 1.5 topology (epsilon), of the
SD 2.x topology (v-prediction, linear projections, per-level head counts, OpenCLIP's exact GELU,
"!" padding) and of SD-Turbo (SD 2.x topology, epsilon, Euler with trailing timesteps)."""

import torch

KINDS = ("sd15", "sd2-v", "turbo")


def save_reduced(path, tokenizer_dir, kind="sd15"):
    """Writes the model `kind` to `path`; returns the diffusers pipeline loaded from it."""
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if kind not in KINDS:
        raise ValueError(kind)
    sd2 = kind != "sd15"
    torch.manual_seed({"sd15": 0, "sd2-v": 1, "turbo": 2}[kind])
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64, attention_head_dim=(2, 4, 4, 4) if sd2 else 8, norm_num_groups=32,
        use_linear_projection=sd2, upcast_attention=sd2,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=64,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=0 if sd2 else 49407,
    ))
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if kind == "turbo":
        scheduler = EulerDiscreteScheduler(timestep_spacing="trailing", **common)
    else:
        scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False,
                                  prediction_type="v_prediction" if sd2 else "epsilon", **common)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, pad_token="!") if sd2 else \
        CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    # Reloaded from disk, as a user would load it: an in-memory pipeline remembers which
    # scheduler settings were defaults, and `from_config` of another class then differs.
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
