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
