"""acs's CLIP token ids against open_clip's tokenizer (ViT-L-14, the SD 1.x text encoder's) on
600 prompts with unicode, punctuation, emoji, numbers, odd whitespace, curly quotes, HTML
entities, ligatures, full-width characters and prompts past 77 tokens."""

import json
import os
import random
import subprocess


from conftest import required_env

ACS = required_env("ACS_BIN")

SUBJECTS = ["a woman", "an old man", "two soldiers", "a knight", "a cat", "a crowd", "a robot", "la señora",
            "東京の少女", "девушка", "a café owner", "ein Mädchen", "a naïve artist", "an ÉLITE guard"]
MODIFIERS = ["nude", "clothed", "bloody", "clean", "smiling", "crying", "in armor", "with a knife",
             "holding flowers", "under neon lights", "at 3:45pm", "in 1920s style", "x2", "#1 best"]
STYLES = ["oil painting", "photo, 35mm, f/1.8", "trending on artstation", "by greg rutkowski and alphonse mucha",
          "octane render, 8k", "digital art!!!", "(masterpiece), ((best quality))", "[cinematic] {dramatic}",
          "hyper-detailed; ultra-realistic", "4K UHD -- v 5", "ukiyo-e", "art nouveau / baroque"]
DECOR = ["🔥", "😀😀", "✨", "👩‍🎤", "™", "©", "…", "—", "“quoted”", "it’s", "&amp;", "&quot;hi&quot;", "ﬁne",
         "ＦＵＬＬ ｗｉｄｔｈ", "  ", "\t", "!!!", "???", "%", "$100", "1.5e3", "½", "°C", "a&b", "<tag>"]


def prompts():
    rng = random.Random(20261128)
    out = []
    for _ in range(600):
        parts = [rng.choice(SUBJECTS), rng.choice(MODIFIERS)]
        for _ in range(rng.randint(0, 3)):
            parts.append(rng.choice(STYLES))
        for _ in range(rng.randint(0, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(DECOR))
        sep = rng.choice([", ", " ", ",", " , ", "  "])
        text = sep.join(parts)
        if rng.random() < 0.1:
            text = (text + ", ") * rng.randint(4, 8)  # past 77 tokens
        if rng.random() < 0.2:
            text = text.upper()
        out.append(text)
    return out


def test_token_ids_match_open_clip():
    import open_clip

    texts = prompts()
    result = subprocess.run([ACS, "model", "tokenize", "-"], input="\n".join(texts), capture_output=True,
                            text=True, check=True)
    ours = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(ours) == len(texts)
    reference = open_clip.get_tokenizer("ViT-L-14")(texts).tolist()
    mismatches = []
    truncated = 0
    for text, mine, theirs in zip(texts, ours, reference):
        end = theirs.index(49407)
        content = theirs[1:end]
        # open_clip cuts to 77 tokens and ends with <|endoftext|>: 75 content tokens, as acs.
        if mine["content"] != content:
            mismatches.append((text, mine["content"][:10], content[:10]))
        truncated += mine["truncated"]
        assert mine["ids"][: end + 1] == theirs[: end + 1]
    assert not mismatches, mismatches[:5]
    assert truncated > 20  # the long prompts were exercised
