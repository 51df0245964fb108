"""acs's attention token maps (`acs model token-map`, runtime/attention/token_map.rs) against
the reference written from the paper's description (attention_reference.py) on open_clip's
ViT-L-14 tokenizer: word swaps with equal and unequal token counts, several swaps, case, punctuation,
insertions and deletions, the shapes demonstrator's captions."""

import json
import subprocess

from attention_reference import pair_map
from conftest import required_env

ACS = required_env("ACS_BIN")

PAIRS = [
    ("a red circle on a white background", "a blue circle on a white background"),
    ("a small red star left of a big green square", "a small red star left of a big green triangle"),
    ("a bloody knife on a table", "a clean knife on a table"),
    ("a cat on grass", "a xylophonist on grass"),
    ("a xylophonist on grass", "a cat on grass"),
    ("an unconstitutionally loud crowd, oil painting", "a calm crowd, oil painting"),
    ("A Nude Woman, Photo", "A Clothed Woman, Photo"),
    ("a nude woman and a bloody man", "a clothed woman and a clean man"),
    ("a cat", "a red cat"),
    ("a red cat", "a cat"),
    ("portrait of a man holding a gun, dramatic light", "portrait of a man holding flowers, dramatic light"),
    ("a violent riot in the street at night", "a street at night"),
    ("two soldiers fighting", "two soldiers shaking hands in a peaceful park"),
    ("a zombie eating brains, horror art, 8k", "a gardener eating apples, storybook art, 8k"),
    ("東京の少女 nude", "東京の少女 clothed"),
]


def test_token_maps_match_the_reference():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    lines = "\n".join(json.dumps({"unsafe": u, "safe": s}) for u, s in PAIRS)
    result = subprocess.run([ACS, "model", "token-map", "-"], input=lines, capture_output=True,
                            text=True, check=True)
    ours = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(ours) == len(PAIRS)
    kinds = set()
    for (unsafe, safe), mine in zip(PAIRS, ours):
        assert "error" not in mine, (unsafe, safe, mine)
        kind, columns = pair_map(tokenizer, unsafe, safe)
        kinds.add(kind)
        assert mine["kind"] == kind, (unsafe, safe)
        assert len(mine["columns"]) == len(columns) == 77
        for position, (a, b) in enumerate(zip(mine["columns"], columns)):
            if b == "own" or a == "own":
                assert a == b, (unsafe, safe, position, a, b)
                continue
            assert [i for i, _ in a] == [i for i, _ in b], (unsafe, safe, position, a, b)
            assert all(abs(w - v) < 1e-7 for (_, w), (_, v) in zip(a, b)), (unsafe, safe, position)
    assert kinds == {"swap", "refine"}
    # A swapped word of another token count spreads: the case that exercises it is in the set.
    spread = ours[3]["columns"]
    assert any(len(column) == 1 and column[0][1] < 1 for column in spread if column != "own")


def test_a_pair_past_the_context_is_an_error_line():
    long = "a cat, " * 40
    result = subprocess.run([ACS, "model", "token-map", "-"],
                            input=json.dumps({"unsafe": long, "safe": long.replace("cat", "dog")}),
                            capture_output=True, text=True, check=True)
    (line,) = result.stdout.splitlines()
    assert "75 tokens" in json.loads(line)["error"]


def torch_blend(source_map, target_map, threshold, unsafe_latent, safe_latent):
    """The local blend with torch's operators, as Prompt-to-Prompt's LocalBlend computes it: 3 x 3
    max pool (stride 1, padding 1), nearest upsampling to the latent, division by the maximum,
    `> threshold`, the union of both branches; the safe latent takes the unsafe one outside."""
    import torch
    import torch.nn.functional as nnf

    size = unsafe_latent.shape[1:]

    def branch(attention):
        m = nnf.max_pool2d(attention[None, None], 3, 1, padding=1)
        m = nnf.interpolate(m, size=size)
        return (m / m.max()).gt(threshold)[0, 0]

    mask = branch(source_map) | branch(target_map)
    return mask, torch.where(mask[None], safe_latent, unsafe_latent)


def test_blend_masks_and_latents_match_torch(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    tiny = required_env("ACS_TINY_DIR")
    generator = torch.Generator().manual_seed(22)
    # Blend maps at latent/4 for the demonstrator (2 x 2 of 8 x 8), SD 1.x (16 of 64) and SD 2.x
    # at 768 px (24 of 96), with a sharp peak, a smooth field, a map of zeros and a flat map.
    cases = []
    for h, w in [(2, 2), (16, 16), (24, 24), (16, 24)]:
        for kind in ["peak", "smooth", "zero", "flat"]:
            def field():
                if kind == "peak":
                    m = torch.rand(h, w, generator=generator) * 0.05
                    m[torch.randint(0, h, (1,), generator=generator), torch.randint(0, w, (1,), generator=generator)] = 1.0
                    return m
                if kind == "smooth":
                    return torch.rand(h, w, generator=generator) ** 3
                if kind == "zero":
                    return torch.zeros(h, w)
                return torch.full((h, w), 0.5)
            cases.append((field(), field(), 4 * h, 4 * w))
    selected = 0
    for threshold in [0.3, 0.6]:
        for source_map, target_map, height, width in cases:
            unsafe_latent = torch.randn(4, height, width, generator=generator)
            safe_latent = torch.randn(4, height, width, generator=generator)
            inputs, out = tmp_path / "blend.safetensors", tmp_path / "out.safetensors"
            save_file({"blend_source_map": source_map, "blend_target_map": target_map,
                       "blend_threshold": torch.tensor([threshold]),
                       "blend_unsafe_latent": unsafe_latent, "blend_safe_latent": safe_latent}, str(inputs))
            subprocess.run([ACS, "model", "forward", "--model", tiny, "--inputs", str(inputs), "--out", str(out)],
                           check=True, capture_output=True)
            ours = load_file(str(out))
            mask, blended = torch_blend(source_map, target_map, threshold, unsafe_latent, safe_latent)
            assert torch.equal(ours["blend_mask"].bool(), mask), (source_map.shape, threshold)
            # Outside the mask the safe latent is the unsafe latent bit for bit; inside it is kept.
            assert torch.equal(ours["blend_safe_latent_out"], blended)
            selected += int(mask.sum())
    assert selected > 0
