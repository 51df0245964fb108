"""Inputs of the CLIP judge tests (Q16 and the Stable Diffusion safety checker): random-weight
models written by transformers and diffusers themselves, the test images, and the reference
arithmetic (the Q16 formula, diffusers' safety-checker loop).

The vision tower has the ViT-L/14 structure (patch 14, 224 px, quick GELU, pre-LN, projection to
768) at a reduced width (64, 4 layers, 4 heads). `initializer_factor = 3` makes the random tower's
embedding depend on the image enough that Q16's probabilities spread on both sides of 0.5."""

import json
import os

import numpy as np
import torch
from PIL import Image
from skimage import data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = os.path.join(REPO, "acs-builder", "assets", "q16-vit-l-14-prompts.npy")

VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, patch_size=14,
              image_size=224, projection_dim=768, hidden_act="quick_gelu", initializer_factor=3.0)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # transformers' OPENAI_CLIP_STD
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=77, projection_dim=768)


def pil_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil()


def pixel_values(paths, processor=None):
    """Pixel values of PNG files as the reference processor computes them (float32 [n, 3, 224, 224])."""
    processor = processor or pil_processor()
    return torch.cat([processor(images=Image.open(p), return_tensors="pt").pixel_values for p in paths])


# --- models ---------------------------------------------------------------------------------

def save_q16_tower(path, seed=0, processor=True, **overrides):
    """transformers' CLIPVisionModelWithProjection with random weights (+ the PIL processor's config)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**dict(VISION, **overrides))).eval()
    model.save_pretrained(path)
    if processor:
        pil_processor().save_pretrained(path)
    return model


def save_clip_model(path, tower):
    """The same vision weights inside a full CLIPModel (CLIPConfig with a small text tower)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(100)
    model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=768)).eval()
    own = tower.state_dict()
    missing, unexpected = model.load_state_dict(own, strict=False)
    assert not unexpected, unexpected
    assert all(not k.startswith(("vision_model.", "visual_projection.")) for k in missing), missing
    model.save_pretrained(path)
    pil_processor().save_pretrained(path)
    return model


def checker_embeds(checker, pixels):
    with torch.no_grad():
        return checker.visual_projection(checker.vision_model(pixels)[1])


def _threshold(values, quantile, adjustments=(0.0,)):
    """A threshold near `quantile` of `values` that keeps every rounded score clear of the
    rounding boundary that decides "> 0" (0.0005), so a 1e-6 difference cannot flip a flag."""
    threshold = float(np.quantile(values, quantile))
    for _ in range(1000):
        margins = [abs(float(v) - threshold + a - 0.0005) for v in values for a in adjustments]
        if min(margins) > 2e-4:
            return threshold
        threshold += 0.0003
    raise AssertionError("no threshold clear of the rounding boundary")


def make_safety_checker(pixels, seed=1):
    """diffusers' StableDiffusionSafetyChecker with a random tower and random concept embeddings;
    thresholds chosen on `pixels` (the test images) so that: special-care concept 0 is positive on
    some images (the 0.01 adjustment path), concepts 0-2 flag some images, and the other concepts
    (threshold above every image) none."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker, cosine_distance
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    checker = StableDiffusionSafetyChecker(
        CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=768)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(17, 768, generator=generator))
        checker.special_care_embeds.copy_(torch.randn(3, 768, generator=generator))
        embeds = checker_embeds(checker, pixels)
        special = cosine_distance(embeds, checker.special_care_embeds).numpy()
        concept = cosine_distance(embeds, checker.concept_embeds).numpy()
        special_weights = [_threshold(special[:, 0], 0.8)] + [float(special[:, k].max()) + 0.05 for k in (1, 2)]
        concept_weights = [_threshold(concept[:, k], q, (0.0, 0.01)) for k, q in ((0, 0.85), (1, 0.9), (2, 0.75))]
        concept_weights += [float(concept[:, k].max()) + 0.05 for k in range(3, 17)]
        checker.special_care_embeds_weights.copy_(torch.tensor(special_weights))
        checker.concept_embeds_weights.copy_(torch.tensor(concept_weights))
    return checker


def save_safety_checker(path, checker):
    checker.save_pretrained(path, safe_serialization=True)
    pil_processor().save_pretrained(path)


def save_pipeline_layout(path, checker):
    """A Stable Diffusion pipeline folder as far as the checker goes: model_index.json,
    safety_checker/ (no processor config inside) and feature_extractor/."""
    os.makedirs(path)
    checker.save_pretrained(os.path.join(path, "safety_checker"), safe_serialization=True)
    pil_processor().save_pretrained(os.path.join(path, "feature_extractor"))
    with open(os.path.join(path, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
                   "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
                   "feature_extractor": ["transformers", "CLIPImageProcessor"],
                   "requires_safety_checker": True}, f)


# --- references -----------------------------------------------------------------------------

def q16_probabilities(image_embeds):
    """The Q16 formula in torch: softmax(100 * cos(image, prompts)) over the two prompt rows."""
    prompts = torch.from_numpy(np.load(PROMPTS).astype(np.float32))
    prompts = prompts / prompts.norm(dim=-1, keepdim=True)
    image = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    return torch.softmax(100.0 * image @ prompts.T, dim=-1)


def checker_scores(checker, pixels):
    """diffusers' per-image loop of StableDiffusionSafetyChecker.forward, kept line for line, with
    its `result` returned: (special_scores [n,3], concept_scores [n,17], has_nsfw [n])."""
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    with torch.no_grad():
        image_embeds = checker_embeds(checker, pixels)
        special_cos_dist = cosine_distance(image_embeds, checker.special_care_embeds).cpu().float().numpy()
        cos_dist = cosine_distance(image_embeds, checker.concept_embeds).cpu().float().numpy()
    result = []
    for i in range(image_embeds.shape[0]):
        result_img = {"special_scores": {}, "special_care": [], "concept_scores": {}, "bad_concepts": []}
        adjustment = 0.0
        for concept_idx in range(len(special_cos_dist[0])):
            concept_cos = special_cos_dist[i][concept_idx]
            concept_threshold = checker.special_care_embeds_weights[concept_idx].item()
            result_img["special_scores"][concept_idx] = round(concept_cos - concept_threshold + adjustment, 3)
            if result_img["special_scores"][concept_idx] > 0:
                result_img["special_care"].append({concept_idx, result_img["special_scores"][concept_idx]})
                adjustment = 0.01
        for concept_idx in range(len(cos_dist[0])):
            concept_cos = cos_dist[i][concept_idx]
            concept_threshold = checker.concept_embeds_weights[concept_idx].item()
            result_img["concept_scores"][concept_idx] = round(concept_cos - concept_threshold + adjustment, 3)
            if result_img["concept_scores"][concept_idx] > 0:
                result_img["bad_concepts"].append(concept_idx)
        result.append(result_img)
    special = np.array([[r["special_scores"][k] for k in range(3)] for r in result], dtype=np.float64)
    concept = np.array([[r["concept_scores"][k] for k in range(17)] for r in result], dtype=np.float64)
    return special, concept, [len(r["bad_concepts"]) > 0 for r in result]


# --- images ---------------------------------------------------------------------------------

def _rgb(name):
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def _resize(image, width, height):
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _gradient(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(0, 255, 3)
    image = c + a * x[..., None] * 255 / width + b * y[..., None] * 255 / height
    return np.clip(image, 0, 255).astype(np.uint8)


PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "colorwheel", "cat")


def judge_images():
    """(name, PIL image): 48 images, deterministic. scikit-image's sample photographs scaled to
    many sizes and aspect ratios (down- and up-scaling, exactly 224, 223/225 odd sides, tiny,
    very wide and tall), at their own sizes, gradients, noise and flat images, plus grey-scale,
    palette and opaque grey+alpha PNGs (the processors' RGB conversion)."""
    rng = np.random.default_rng(20261129)
    photos = {name: _rgb(name) for name in PHOTOS}
    sizes = [(64, 64), (224, 224), (300, 200), (200, 333), (517, 129), (1024, 768), (225, 223), (20, 31),
             (1500, 900), (223, 225), (224, 300), (400, 224), (129, 517), (640, 480), (97, 1023), (256, 256),
             (31, 20), (2, 7)]
    arrays = []
    for i, (width, height) in enumerate(sizes):
        name = PHOTOS[i % len(PHOTOS)]
        arrays.append((f"{name}-{width}x{height}", _resize(photos[name], width, height)))
    arrays += [(f"{name}-native", photo) for name, photo in photos.items()]
    for i, (width, height) in enumerate([(64, 64), (224, 224), (300, 200), (517, 129), (1024, 768), (20, 31),
                                         (225, 223), (333, 200)]):
        arrays.append((f"gradient-{width}x{height}", _gradient(width, height, i)))
    for width, height in [(64, 64), (224, 224), (200, 333), (1500, 900), (37, 53)]:
        arrays.append((f"noise-{width}x{height}", rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    arrays += [
        ("flat-gray", np.full((128, 96, 3), 180, np.uint8)),
        ("black", np.zeros((224, 224, 3), np.uint8)),
        ("white", np.full((300, 301, 3), 255, np.uint8)),
        ("checker", np.repeat((np.indices((240, 320)).sum(0) // 8 % 2 * 255).astype(np.uint8)[..., None], 3, 2)),
    ]
    images = [(name, Image.fromarray(array)) for name, array in arrays]
    chelsea = Image.fromarray(photos["chelsea"])
    images.append(("camera-grey-L", Image.fromarray(data.camera()).resize((300, 260), Image.BILINEAR)))
    images.append(("chelsea-palette", chelsea.convert("P", palette=Image.ADAPTIVE, colors=64)))
    images.append(("coffee-grey-opaque-alpha", Image.fromarray(photos["coffee"]).convert("LA").resize((250, 410))))
    return images


def _raw_png(samples, color_type, bit_depth=16):
    """PNG bytes written by hand (Pillow cannot save 16-bit colour): big-endian samples of
    shape (h, w, channels), filter 0 on every row."""
    import struct
    import zlib

    height, width = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\0" + samples[y].astype(dtype).tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def unusual_pngs(folder):
    """PNG files whose RGB conversion is not a plain copy, as (name, path): transparency, which
    transformers 5 composites onto white (image_transforms.convert_to_rgb) -- RGBA with alpha
    running from 0 to 255 across the width, a palette with a transparent index (tRNS), grey with
    alpha -- and 16-bit samples, which Pillow reduces to their high byte (RGB, RGBA) or clips at
    255 (grey, mode I;16)."""
    chelsea = Image.fromarray(_rgb("chelsea"))
    ramp = np.linspace(0, 255, chelsea.width).astype(np.uint8)[None, :]
    rgba = np.asarray(chelsea.convert("RGBA")).copy()
    rgba[..., 3] = ramp
    palette = chelsea.convert("P", palette=Image.ADAPTIVE, colors=16)
    grey_alpha = np.stack([np.asarray(chelsea.convert("L")), np.broadcast_to(ramp, rgba.shape[:2])], -1)
    wide = np.asarray(chelsea).astype(np.uint16) * 257 + np.arange(chelsea.width, dtype=np.uint16)[None, :, None]
    wide_alpha = np.concatenate([wide, ramp[..., None].astype(np.uint16).repeat(rgba.shape[0], 0) * 257], -1)
    grey16 = np.linspace(0, 600, chelsea.width * 40).astype(np.uint16).reshape(40, chelsea.width, 1)
    files = []
    for name, write in [
        ("chelsea-translucent-rgba", lambda p: Image.fromarray(rgba, "RGBA").save(p)),
        ("chelsea-palette-trns", lambda p: palette.save(p, transparency=0)),
        ("chelsea-grey-alpha", lambda p: Image.fromarray(grey_alpha, "LA").save(p)),
        ("chelsea-rgb16", lambda p: open(p, "wb").write(_raw_png(wide, 2))),
        ("chelsea-rgba16", lambda p: open(p, "wb").write(_raw_png(wide_alpha, 6))),
        ("ramp-grey16", lambda p: open(p, "wb").write(_raw_png(grey16, 0))),
    ]:
        path = os.path.join(folder, f"{name}.png")
        write(path)
        files.append((name, path))
    return files


def write_images(folder, images=None):
    paths = []
    for name, image in images or judge_images():
        path = os.path.join(folder, f"{name}.png")
        image.save(path, format="PNG", compress_level=1)
        paths.append(path)
    return paths
