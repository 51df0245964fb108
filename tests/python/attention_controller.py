"""The reference for acs's attention-controlled pair rendering (issue 22): both prompts of a pair
denoised together from one x_T with diffusers' UNet, its attention processors replaced where a
setting acts, written from the description of Prompt-to-Prompt (Hertz et al., ICLR 2023) and of
InstructPix2Pix's generator (Brooks et al., CVPR 2023) in ../shared/notes/attention-control.md,
not from their code nor from acs's.

One UNet call per step on the rows [uncond_u, uncond_s, cond_u, cond_s] (u: the unsafe prompt,
the source; s: the safe prompt, the target). Settings (all optional):

- cross_replace: c (the steps [0, c]), [a, b], or {"default": c | [a, b], word: c | [a, b]}.
  In every cross-attention layer, conditional half, the safe row's probabilities become
  alpha * (M(P_u) * w) + (1 - alpha) * P_s per key token, alpha in {0, 1} per step and token,
  step i replaced when floor(a * (steps + 1)) <= i < floor(b * (steps + 1)); M the pair's token
  map (attention_reference.pair_map), w the reweight factors.
- self_replace: c or [a, b]. In the self-attention of the coarse layers (the blend level and
  deeper, mid block included), conditional half, P_s = P_u at steps
  floor(a * steps) <= i < floor(b * steps).
- reweight: {word: factor} for the safe prompt's words (acts only where alpha is 1).
- local_blend: {"threshold": 0.3, "start": 0.2, "words": [...]}: the edited words' attention in
  the blend layers (cross-attention at the blend level) accumulated from step 0, and after every
  scheduler step from floor(start * steps) on the safe latent is the unsafe one outside the mask.
- share_self_attention: p (InstructPix2Pix). In every self-attention layer, both halves, the safe
  row attends with the unsafe row's probabilities while p > i / (steps - 1). Excludes the others.

Run as a script, it checks itself against diffusers' pipeline (see `main`).
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from attention_reference import CONTEXT, pair_map

P2P_KEYS = ("cross_replace", "self_replace", "reweight", "local_blend")
ALL_KEYS = P2P_KEYS + ("share_self_attention",)

_TOKENIZER = None


def clip_tokenizer():
    """open_clip's ViT-L-14 tokenizer (the one the token maps are defined on), loaded once."""
    global _TOKENIZER
    if _TOKENIZER is None:
        import open_clip

        _TOKENIZER = open_clip.get_tokenizer("ViT-L-14")
    return _TOKENIZER


# ----------------------------------------------------------------------------- settings


def step_range(value):
    """A float c is [0, c]; a pair [a, b] is itself."""
    if isinstance(value, (int, float)):
        start, end = 0.0, float(value)
    else:
        start, end = (float(v) for v in value)
    if not (0.0 <= start <= end <= 1.0):
        raise ValueError(f"step range {value!r} is not an ordered range within [0, 1]")
    return start, end


def word_spans(tokenizer, prompt):
    """The context positions of each whitespace-separated word, each word encoded on its own
    (position 0 is the start token, so the first word starts at 1); positions past the context
    are dropped."""
    spans, position = [], 1
    for word in prompt.split():
        n = len(tokenizer.encode(word))
        spans.append([p for p in range(position, position + n) if p < CONTEXT])
        position += n
    return spans


def word_positions(tokenizer, prompt, word):
    """The positions of every word of `prompt` equal to `word`, case-insensitively."""
    word = word.lower()
    return [p for w, span in zip(prompt.split(), word_spans(tokenizer, prompt)) if w.lower() == word for p in span]


def cross_alphas(tokenizer, safe_prompt, value, steps):
    """[steps, CONTEXT] of 0 / 1: where the safe prompt's positions take the mapped column."""
    if isinstance(value, dict):
        entries = dict(value)
        default = entries.pop("default", entries.pop("default_", 1.0))
    else:
        default, entries = value, {}
    ranges = [step_range(default)] * CONTEXT
    for word, rng in entries.items():  # later entries win
        for p in word_positions(tokenizer, safe_prompt, word):
            ranges[p] = step_range(rng)
    rows = steps + 1  # Prompt-to-Prompt counts the run in steps + 1 rows
    alpha = torch.zeros(steps, CONTEXT)
    for j, (a, b) in enumerate(ranges):
        for i in range(steps):
            if int(a * rows) <= i < int(b * rows):
                alpha[i, j] = 1.0
    return alpha


def lcs_kept(x, y):
    """Which items of x and of y belong to a longest common subsequence of the two lists (the
    trace from the front takes a match when the items agree, else skips the item of x when that
    keeps the longest length, else the item of y)."""
    n, m = len(x), len(y)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if x[i] == y[j] else max(best[i + 1][j], best[i][j + 1])
    kept_x, kept_y = [False] * n, [False] * m
    i = j = 0
    while i < n and j < m:
        if x[i] == y[j]:
            kept_x[i] = kept_y[j] = True
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return kept_x, kept_y


def edited_word_indices(source, target):
    """(source word indices, target word indices) of the edited words: for a swap (same word
    count) the words that differ at the same index, for a refinement the words outside the
    longest common subsequence (words compared case-insensitively)."""
    xs, ys = [w.lower() for w in source.split()], [w.lower() for w in target.split()]
    if len(xs) == len(ys):
        differ = [k for k in range(len(xs)) if xs[k] != ys[k]]
        return differ, differ
    kept_x, kept_y = lcs_kept(xs, ys)
    return [k for k, kept in enumerate(kept_x) if not kept], [k for k, kept in enumerate(kept_y) if not kept]


def blend_positions(tokenizer, source, target, words=None):
    """The context positions (source, target) whose attention the local blend sums."""
    if words is not None:
        src = sorted({p for w in words for p in word_positions(tokenizer, source, w)})
        tgt = sorted({p for w in words for p in word_positions(tokenizer, target, w)})
        return src, tgt
    sx, sy = word_spans(tokenizer, source), word_spans(tokenizer, target)
    ix, iy = edited_word_indices(source, target)
    return [p for k in ix for p in sx[k]], [p for k in iy for p in sy[k]]


def map_matrix(columns):
    """The token map as a [CONTEXT, CONTEXT] matrix (source row k, target column j) and the mask
    of target positions that keep their own column."""
    matrix = torch.zeros(CONTEXT, CONTEXT)
    own = torch.zeros(CONTEXT, dtype=torch.bool)
    for j, column in enumerate(columns):
        if column == "own":
            own[j] = True
            continue
        for k, weight in column:
            matrix[k, j] += weight
    return matrix, own


# ----------------------------------------------------------------------------- layers


def layer_levels(unet):
    """(blend level B, {processor name: level}) where down_blocks[k] / up_blocks[n-1-k] are level
    k and the mid block is level n (deepest)."""
    n = len(unet.down_blocks)
    with_attention = [k for k, block in enumerate(unet.down_blocks) if getattr(block, "attentions", None)]
    if not with_attention:
        raise ValueError("the UNet has no attention in its down blocks")
    levels = {}
    for name in unet.attn_processors:
        head = name.split(".")
        if head[0] == "down_blocks":
            levels[name] = int(head[1])
        elif head[0] == "up_blocks":
            levels[name] = n - 1 - int(head[1])
        elif head[0] == "mid_block":
            levels[name] = n
        else:
            raise ValueError(f"unexpected attention layer {name}")
    return max(with_attention), levels


def is_cross(name):
    return ".attn2." in name


def is_self(name):
    return ".attn1." in name


# ----------------------------------------------------------------------------- control


class Controller:
    """The run's state shared by the processors: the step, the plan, the blend store."""

    def __init__(self, steps, plan):
        self.steps = steps
        self.step = 0
        self.plan = plan
        self.store_u = None
        self.store_s = None
        self.blend_heads = set()
        self.blend_layers = set()

    # which edits act at the current step
    def cross_alpha(self):
        alpha = self.plan.get("alpha")
        if alpha is None:
            return None
        row = alpha[self.step]
        return row if bool(row.any()) else None

    def self_active(self):
        rng = self.plan.get("self_range")
        if rng is None:
            return False
        a, b = rng
        return int(a * self.steps) <= self.step < int(b * self.steps)

    def shared_active(self):
        p = self.plan.get("share")
        if p is None:
            return False
        if self.steps <= 1:
            return self.step == 0 and p > 0
        return p > self.step / (self.steps - 1)

    def store(self, name, heads, source_sum, target_sum):
        self.blend_heads.add(heads)
        self.blend_layers.add(name)
        if self.store_u is None:
            self.store_u, self.store_s = source_sum.clone(), target_sum.clone()
        else:
            self.store_u += source_sum
            self.store_s += target_sum


def edit_cross(source, own, alpha, plan):
    """The safe row's new cross-attention probabilities [heads, Nq, 77] from the unsafe row's
    (`source`) and its own: alpha * (M(source) * w) + (1 - alpha) * own per key token, M(source)
    the token map's weighted sum of source columns or, for an "own" column, the own column; no
    renormalisation. alpha is 0 or 1, so the blend is a selection."""
    mapped = torch.where(plan["own"], own, source @ plan["matrix"]) * plan["weights"]
    return torch.where(alpha.bool(), mapped, own)


class ProbabilityProcessor:
    """An attention layer computed as softmax(q k^T * scale) per head (diffusers'
    `get_attention_scores`) so that the conditional half's probabilities can be edited; each
    row then reads its own values."""

    def __init__(self, controller, name, cross_edit=False, self_inject=False, blend=False):
        self.controller = controller
        self.name = name
        self.cross_edit = cross_edit
        self.self_inject = self_inject
        self.blend = blend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert attention_mask is None and attn.spatial_norm is None and attn.group_norm is None
        assert hidden_states.ndim == 3
        residual = hidden_states
        ctl = self.controller
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))
        probs = attn.get_attention_scores(query, key, None)
        rows = probs.shape[0] // attn.heads
        assert rows == 4, "rows must be [uncond_u, uncond_s, cond_u, cond_s]"
        p = probs.view(rows, attn.heads, *probs.shape[1:])
        if self.cross_edit:
            alpha = ctl.cross_alpha()
            if alpha is not None:
                p[3] = edit_cross(p[2], p[3], alpha, ctl.plan)
        if self.self_inject and ctl.self_active():
            p[3] = p[2]
        if self.blend:
            plan = ctl.plan
            ctl.store(self.name, attn.heads,
                      p[2][:, :, plan["blend_source"]].sum(-1).sum(0),
                      p[3][:, :, plan["blend_target"]].sum(-1).sum(0))
        out = torch.bmm(p.view_as(probs), value)
        out = attn.batch_to_head_dim(out)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SharedSelfProcessor:
    """InstructPix2Pix's shared self-attention: where active, the safe rows (uncond_s, cond_s)
    take the unsafe rows' queries and keys, i.e. softmax(q_u k_u^T * scale) v_s, with
    scaled_dot_product_attention (no 4096 x 4096 probabilities); otherwise diffusers'
    AttnProcessor2_0 computation."""

    def __init__(self, controller):
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None
        assert attn.spatial_norm is None and attn.group_norm is None and hidden_states.ndim == 3
        residual = hidden_states
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if self.controller.shared_active():
            assert batch == 4
            unsafe = torch.tensor([0, 0, 2, 2])
            query, key = query[unsafe], key[unsafe]
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def make_plan(tokenizer, unsafe_prompt, safe_prompt, steps, settings):
    settings = dict(settings or {})
    unknown = set(settings) - set(ALL_KEYS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    plan = {}
    if "share_self_attention" in settings:
        if any(k in settings for k in P2P_KEYS):
            raise ValueError("share_self_attention excludes the Prompt-to-Prompt settings")
        plan["share"] = float(settings["share_self_attention"])
        return plan
    if "cross_replace" in settings:
        plan["kind"], columns = pair_map(tokenizer, unsafe_prompt, safe_prompt)
        plan["matrix"], plan["own"] = map_matrix(columns)
        plan["alpha"] = cross_alphas(tokenizer, safe_prompt, settings["cross_replace"], steps)
        weights = torch.ones(CONTEXT)
        for word, factor in (settings.get("reweight") or {}).items():
            for p in word_positions(tokenizer, safe_prompt, word):
                weights[p] = float(factor)
        plan["weights"] = weights
    if "self_replace" in settings:
        plan["self_range"] = step_range(settings["self_replace"])
    if settings.get("local_blend") is not None:
        blend = dict(settings["local_blend"])
        plan["blend_threshold"] = float(blend.get("threshold", 0.3))
        plan["blend_start"] = float(blend.get("start", 0.2))
        plan["blend_source"], plan["blend_target"] = blend_positions(
            tokenizer, unsafe_prompt, safe_prompt, blend.get("words"))
    return plan


def processors_for(unet, controller, plan):
    """Every layer's processor: controlled layers get their own, the rest AttnProcessor2_0."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    blend_level, levels = layer_levels(unet)
    processors = {}
    for name, level in levels.items():
        coarse = level >= blend_level
        if "share" in plan:
            processor = SharedSelfProcessor(controller) if is_self(name) else AttnProcessor2_0()
        else:
            cross_edit = is_cross(name) and "alpha" in plan
            self_inject = is_self(name) and coarse and "self_range" in plan
            blend = is_cross(name) and level == blend_level and "blend_threshold" in plan
            if cross_edit or self_inject or blend:
                processor = ProbabilityProcessor(controller, name, cross_edit, self_inject, blend)
            else:
                processor = AttnProcessor2_0()
        processors[name] = processor
    return blend_level, processors


def blend_mask(controller, blend_level, height, width):
    """The local blend mask [height, width] (bool) from the store, and how close any cell came to
    the threshold (normalised value - threshold, smallest magnitude)."""
    plan = controller.plan
    hb, wb = height, width
    for _ in range(blend_level):
        hb, wb = (hb + 1) // 2, (wb + 1) // 2
    (heads,) = controller.blend_heads
    count = heads * len(controller.blend_layers)
    threshold = plan["blend_threshold"]
    masks, margin = [], float("inf")
    for store in (controller.store_u, controller.store_s):
        m = (store / count).reshape(1, 1, hb, wb)
        m = F.max_pool2d(m, 3, stride=1, padding=1)
        m = F.interpolate(m, size=(height, width), mode="nearest")
        m = m / m.max()
        masks.append(m.gt(threshold)[0, 0])
        if torch.isfinite(m).all():
            margin = min(margin, float((m - threshold).abs().min()))
    return masks[0] | masks[1], margin


@contextlib.contextmanager
def shared_ancestral_noise():
    """Euler ancestral's noise drawn once per step ([1, c, h, w], continuing the generator that
    drew x_T) and repeated for both rows of the pair."""
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as module

    original = module.randn_tensor

    def one_draw(shape, generator=None, device=None, dtype=None, layout=None):
        noise = original((1, *shape[1:]), generator=generator, device=device, dtype=dtype, layout=layout)
        return noise.expand(*shape).clone()

    module.randn_tensor = one_draw
    try:
        yield
    finally:
        module.randn_tensor = original


def encode(pipe, prompts):
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


def make_scheduler(pipe, scheduler_kind):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    kinds = {"ddim": DDIMScheduler, "euler-ancestral": EulerAncestralDiscreteScheduler}
    if scheduler_kind not in kinds:
        raise ValueError(f"scheduler {scheduler_kind!r}")
    return kinds[scheduler_kind].from_config(pipe.scheduler.config)


@torch.no_grad()
def render_pair(pipe, unsafe_prompt, safe_prompt, seed, steps, guidance, height, width,
                negative_prompt="", scheduler_kind="ddim", settings=None, tokenizer=None):
    """Both prompts of a pair from one x_T under the attention `settings`.

    Returns {"latents": [2, c, h, w] float32 (row 0 unsafe, row 1 safe), "mask": [h, w] uint8 of
    the last applied local blend or None, "blend_margin": the smallest |normalised blend map -
    threshold| over the applied blends (inf without), "blend_level", "plan"}."""
    tokenizer = tokenizer or clip_tokenizer()
    negative_prompt = negative_prompt or ""
    plan = make_plan(tokenizer, unsafe_prompt, safe_prompt, steps, settings)
    unet = pipe.unet
    controller = Controller(steps, plan)
    blend_level, processors = processors_for(unet, controller, plan)

    context = encode(pipe, [negative_prompt, negative_prompt, unsafe_prompt, safe_prompt])
    scheduler = make_scheduler(pipe, scheduler_kind)
    scheduler.set_timesteps(steps)
    h, w = height // pipe.vae_scale_factor, width // pipe.vae_scale_factor
    generator = torch.Generator("cpu").manual_seed(seed)
    x_t = torch.randn([1, unet.config.in_channels, h, w], generator=generator) * scheduler.init_noise_sigma
    latents = x_t.repeat(2, 1, 1, 1)
    ancestral = scheduler_kind == "euler-ancestral"

    mask, margin = None, float("inf")
    saved = unet.attn_processors
    unet.set_attn_processor(processors)
    try:
        with shared_ancestral_noise() if ancestral else contextlib.nullcontext():
            for i, t in enumerate(scheduler.timesteps):
                controller.step = i
                model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                eps = unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
                uncond, cond = eps.chunk(2)
                guided = uncond + guidance * (cond - uncond)
                extra = {"generator": generator} if ancestral else {}
                latents = scheduler.step(guided, t, latents, return_dict=False, **extra)[0]
                if "blend_threshold" in plan and i >= int(plan["blend_start"] * steps):
                    applied, step_margin = blend_mask(controller, blend_level, h, w)
                    margin = min(margin, step_margin)
                    latents = torch.stack([latents[0], torch.where(applied[None], latents[1], latents[0])])
                    mask = applied
    finally:
        unet.set_attn_processor(saved)
    return {
        "latents": latents.float().numpy(),
        "mask": None if mask is None else mask.to(torch.uint8).numpy(),
        "blend_margin": margin,
        "blend_level": blend_level,
        "plan": plan,
    }


# ----------------------------------------------------------------------------- self-checks


def relative_error(theirs, ours):
    return float(np.abs(theirs - ours).max()) / float(np.abs(theirs).max())


def check_rules(tokenizer):
    """The step and token rules and the cross edit against plain loops over the definitions."""
    # Cross replacement counts steps + 1 rows: 50 steps, 0.8 -> steps 0..39.
    alpha = cross_alphas(tokenizer, "a cat", 0.8, 50)
    assert alpha[:40].all() and not alpha[40:].any()
    # A word override: "clothed" (two tokens, positions 2-3) replaced at steps 0..3 (floor(0.4 * 11)).
    alpha = cross_alphas(tokenizer, "a Clothed person", {"default": 1.0, "clothed": 0.4, "absent": 0.0}, 10)
    assert alpha[3, 2:5].tolist() == [1, 1, 1] and alpha[4, 2:5].tolist() == [0, 0, 1] and alpha[9, 0] == 1
    # Self injection, blend start, InstructPix2Pix's p.
    ctl = Controller(10, {"self_range": step_range([0.2, 0.5])})
    assert [i for i in range(10) if (setattr(ctl, "step", i) or ctl.self_active())] == [2, 3, 4]
    ctl = Controller(11, {"share": 0.5})
    assert [i for i in range(11) if (setattr(ctl, "step", i) or ctl.shared_active())] == [0, 1, 2, 3, 4]
    # Edited words: swap (the differing index), refinement (outside the LCS), explicit words.
    assert blend_positions(tokenizer, "a bloody knife on a table", "a spotless knife on a table") == ([2], [2, 3])
    assert blend_positions(tokenizer, "a knife on a table", "a clean shiny knife on a table") == ([], [2, 3])
    assert blend_positions(tokenizer, "a red cat", "a cat") == ([2], [])
    assert blend_positions(tokenizer, "a bloody knife", "a clean knife", ["knife"]) == ([3], [3])
    # The cross edit against a loop over the formula, on a spread swap and a refinement with reweight.
    generator = torch.Generator().manual_seed(0)
    for source, target, weights in [("a cat on grass", "a xylophonist on grass", {"grass": 3.0}),
                                    ("a knife on a table", "a clean shiny knife on a table", {"clean": 2.0})]:
        plan = make_plan(tokenizer, source, target, 10,
                         {"cross_replace": {"default": 1.0, weights and list(weights)[0]: 0.5}, "reweight": weights})
        _, columns = pair_map(tokenizer, source, target)
        p_u = torch.rand(2, 5, CONTEXT, generator=generator).softmax(-1)
        p_s = torch.rand(2, 5, CONTEXT, generator=generator).softmax(-1)
        for step in (0, 9):
            ours = edit_cross(p_u, p_s, plan["alpha"][step], plan)
            for j in range(CONTEXT):
                a = float(plan["alpha"][step, j])
                mapped = p_s[..., j] if columns[j] == "own" else sum(w * p_u[..., k] for k, w in columns[j])
                expected = a * (mapped * plan["weights"][j]) + (1 - a) * p_s[..., j]
                assert torch.allclose(ours[..., j], expected, atol=1e-7), (source, target, step, j)
    print("rules: step ranges, word positions, edited words and the cross edit agree with the definitions")


def main():
    """Self-checks on reduced random-weight models (python attention_controller.py TOKENIZER_DIR
    [WORKDIR]): no settings equals diffusers' pipeline per prompt (DDIM, Euler ancestral); the
    local blend keeps the safe latent equal to the unsafe one outside its mask; the edits leave
    the unsafe branch alone; shared self-attention sanity; and the time of each parity-test case."""
    import argparse
    import os
    import tempfile
    import time
    import warnings

    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from model_factory import save_reduced

    warnings.filterwarnings("ignore")
    diffusers_logging.set_verbosity_error()
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer_dir")
    parser.add_argument("workdir", nargs="?", default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--size2", type=int, default=768)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default="abcd")
    args = parser.parse_args()
    torch.set_num_threads(2)
    check_rules(clip_tokenizer())
    work = args.workdir or tempfile.mkdtemp()
    pipes = {}
    for kind in ("sd15", "sd2-v"):
        path = os.path.join(work, kind)
        if os.path.exists(os.path.join(path, "model_index.json")):
            pipes[kind] = StableDiffusionPipeline.from_pretrained(path, safety_checker=None,
                                                                  requires_safety_checker=False)
            pipes[kind].set_progress_bar_config(disable=True)
        else:
            pipes[kind] = save_reduced(path, args.tokenizer_dir, kind)
    steps, size = args.steps, args.size
    unsafe, safe, seed = "a bloody knife on a table", "a clean knife on a table", 7
    pipe = pipes["sd15"]
    blend_level, levels = layer_levels(pipe.unet)
    coarse = [n for n, level in levels.items() if level >= blend_level and is_self(n)]
    blend = [n for n, level in levels.items() if level == blend_level and is_cross(n)]
    print(f"blend level {blend_level}; coarse self-attention: {coarse}; blend layers: {blend}")

    def timed(label, *a, **k):
        start = time.time()
        out = render_pair(*a, **k)
        print(f"[time] {label}: {time.time() - start:.1f} s", flush=True)
        return out

    def blend_report(out):
        lat, mask = out["latents"], out["mask"].astype(bool)
        outside = ~np.broadcast_to(mask, lat.shape[1:])
        return (f"mask {int(mask.sum())} of {mask.size} cells; outside bit-equal "
                f"{np.array_equal(lat[0][outside].view(np.uint32), lat[1][outside].view(np.uint32))} "
                f"({int(outside.sum())} values); inside max |safe - unsafe| "
                f"{np.abs(lat[0] - lat[1])[~outside].max() if mask.any() else 0:.3e}; margin {out['blend_margin']:.1e}")

    free = {}
    if "a" in args.only:
        # (a) no settings == diffusers' pipeline on each prompt alone.
        original_scheduler = pipe.scheduler
        for kind in ("ddim", "euler-ancestral"):
            free[kind] = ours = timed(f"sd15 {size} {kind} no settings", pipe, unsafe, safe, seed, steps, 7.5,
                                      size, size, "", kind, {})["latents"]
            if kind == "euler-ancestral":
                pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(original_scheduler.config)
            for row, prompt in enumerate((unsafe, safe)):
                start = time.time()
                theirs = pipe(prompt=prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=7.5,
                              height=size, width=size, generator=torch.Generator("cpu").manual_seed(seed),
                              output_type="latent").images.numpy()[0]
                print(f"(a) {kind} row {row}: relative error to diffusers {relative_error(theirs, ours[row]):.2e}"
                      f" (diffusers {time.time() - start:.1f} s)")
            pipe.scheduler = original_scheduler

    if "b" in args.only:
        # (b) the parity test's blend cases: outside the mask safe == unsafe bit for bit.
        case1 = {"cross_replace": 0.8, "self_replace": 0.4, "local_blend": {"threshold": 0.9335, "start": 0.2}}
        out = timed(f"case 1 sd15 {size} ddim spread swap+self+blend", pipe, unsafe, "a spotless knife on a table",
                    seed, steps, 7.5, size, size, "", "ddim", case1)
        print(f"(b) case 1: {blend_report(out)}")
        if "ddim" in free:
            print(f"(b) case 1 unsafe row vs no settings: {relative_error(free['ddim'][0], out['latents'][0]):.1e}")
        case3 = {"cross_replace": {"default": 1.0, "clean": 0.4}, "self_replace": 0.4,
                 "local_blend": {"threshold": 0.9285, "start": 0.2}}
        out = timed(f"case 3 sd2-v {args.size2} ddim swap+blend+word range", pipes["sd2-v"], unsafe, safe, seed,
                    steps, 7.5, args.size2, args.size2, "", "ddim", case3)
        print(f"(b) case 3: blend level {out['blend_level']}; {blend_report(out)}")
        out = render_pair(pipe, unsafe, safe, seed, steps, 7.5, size, size, "", "ddim",
                          {"local_blend": {"threshold": 0.3}})
        print(f"(b) blend alone, threshold 0.3 (random weights: flat maps): {blend_report(out)}")

    if "c" in args.only:
        # (c) shared self-attention: equal prompts give equal rows; p = 0 is no control; the unsafe
        # row never changes; a full cross + self replacement of identical prompts changes nothing.
        same = render_pair(pipe, unsafe, unsafe, seed, steps, 7.5, size, size, "", "euler-ancestral",
                           {"share_self_attention": 1.0})["latents"]
        print(f"(c) equal prompts, share 1.0: rows bit-equal {np.array_equal(same[0], same[1])}")
        if "euler-ancestral" not in free:
            free["euler-ancestral"] = render_pair(pipe, unsafe, safe, seed, steps, 7.5, size, size, "",
                                                  "euler-ancestral", {})["latents"]
        zero = render_pair(pipe, unsafe, safe, seed, steps, 7.5, size, size, "", "euler-ancestral",
                           {"share_self_attention": 0.0})["latents"]
        print(f"(c) share 0.0 vs no settings: bit-equal {np.array_equal(free['euler-ancestral'], zero)}")
        shared = timed(f"case 4 sd15 {size} euler-a share 0.5 (guidance 7.5; the test uses 15)", pipe, unsafe, safe,
                       seed, steps, 7.5, size, size, "",
                       "euler-ancestral", {"share_self_attention": 0.5})["latents"]
        full = render_pair(pipe, unsafe, safe, seed, steps, 7.5, size, size, "", "euler-ancestral",
                           {"share_self_attention": 1.0})["latents"]
        free_a = free["euler-ancestral"]
        print(f"(c) unsafe row vs no settings: share 0.5 {relative_error(free_a[0], shared[0]):.1e}, "
              f"share 1.0 {relative_error(free_a[0], full[0]):.1e}; |safe - unsafe| / range: no control "
              f"{relative_error(free_a[0], free_a[1]):.4f}, share 0.5 {relative_error(shared[0], shared[1]):.4f}, "
              f"share 1.0 {relative_error(full[0], full[1]):.4f}")
        ident = render_pair(pipe, unsafe, unsafe, seed, steps, 7.5, size, size, "", "ddim",
                            {"cross_replace": 1.0, "self_replace": 1.0})["latents"]
        print(f"(c) identical prompts, cross 1.0 + self 1.0: rows bit-equal {np.array_equal(ident[0], ident[1])}")

    if "d" in args.only:
        case2 = {"cross_replace": [0.0, 0.8], "self_replace": 0.4, "reweight": {"clean": 2.0}}
        out = timed(f"case 2 sd15 {size} euler-a refine+reweight", pipe, "a knife on a table",
                    "a clean shiny knife on a table", 11, steps, 7.5, size, size, "", "euler-ancestral", case2)
        plain = render_pair(pipe, "a knife on a table", "a clean shiny knife on a table", 11, steps, 7.5, size, size,
                            "", "euler-ancestral", {})["latents"]
        no_weight = render_pair(pipe, "a knife on a table", "a clean shiny knife on a table", 11, steps, 7.5, size,
                                size, "", "euler-ancestral", {k: v for k, v in case2.items() if k != "reweight"})
        print(f"(d) case 2 map {out['plan']['kind']}; unsafe row vs no settings "
              f"{relative_error(plain[0], out['latents'][0]):.1e}; safe row vs no settings "
              f"{relative_error(plain[1], out['latents'][1]):.4f}, vs without reweight "
              f"{relative_error(no_weight['latents'][1], out['latents'][1]):.4f}")


if __name__ == "__main__":
    main()
