"""The reference for acs's attention control (issue 22), written here from Prompt-to-Prompt's
description (Hertz et al., ICLR 2023; ../shared/notes/attention-control.md), not from acs's
code: the token maps between a pair's prompts, on open_clip's tokenizer.

A map gives, for each of the target (safe) prompt's 77 context positions, either "own" (the
target keeps its own cross-attention column) or a list of [source position, weight] whose
weighted sum of source (unsafe) columns the target reads.
"""

CONTEXT = 77
BOS, EOS = 49406, 49407


def word_tokens(tokenizer, prompt):
    """The content tokens of each whitespace-separated word, encoded on its own."""
    return [tokenizer.encode(word) for word in prompt.split()]


def swap_map(tokenizer, source, target):
    """Same number of words: kept tokens read their own counterpart; a swapped word reads its
    source word's tokens one for one when the counts agree, else each of its tokens reads every
    source token of the word with weight 1 / (its token count)."""
    source_words, target_words = source.split(), target.split()
    assert len(source_words) == len(target_words)
    source_tokens, target_tokens = word_tokens(tokenizer, source), word_tokens(tokenizer, target)
    columns = [[] for _ in range(CONTEXT)]
    # Pair the positions word by word: start token, each word, then end token and padding.
    s, t = 1, 1
    pairs = [(0, 0)]
    for w in range(len(source_words)):
        ns, nt = len(source_tokens[w]), len(target_tokens[w])
        if source_words[w] == target_words[w]:
            pairs += [(s + k, t + k) for k in range(ns)]
        elif ns == nt:
            pairs += [(s + k, t + k) for k in range(ns)]
        else:
            for k in range(nt):
                columns[t + k] = [[s + m, 1.0 / nt] for m in range(ns)]
        s, t = s + ns, t + nt
    while s < CONTEXT and t < CONTEXT:
        pairs.append((s, t))
        s, t = s + 1, t + 1
    for s, t in pairs:
        columns[t] = [[s, 1.0]]
    return columns


def align(x, y):
    """Needleman-Wunsch of two id lists (gap 0, match 1, mismatch -1). Among equal scores the
    path takes a gap in x (y's token inserted) first, then a gap in y, then the diagonal.
    Returns, for each position of y, the position of x it is aligned with, or None."""
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    move = [["ins"] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        move[i][0] = "del"
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = [
                ("ins", score[i][j - 1]),
                ("del", score[i - 1][j]),
                ("diag", score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)),
            ]
            best = max(v for _, v in options)
            score[i][j] = best
            move[i][j] = next(name for name, v in options if v == best)
    aligned = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == "diag" and i > 0 and j > 0:
            i, j = i - 1, j - 1
            aligned[j] = i
        elif step == "ins" and j > 0:
            j -= 1
        elif i > 0:
            i -= 1
        else:
            j -= 1
    return aligned


def refine_map(tokenizer, source, target):
    """Words inserted or deleted: aligned tokens read their source token, inserted ones keep
    their own column; positions past the target's end token read the same source position."""
    x = [BOS] + tokenizer.encode(source)[:CONTEXT - 2] + [EOS]
    y = [BOS] + tokenizer.encode(target)[:CONTEXT - 2] + [EOS]
    columns = [[[j, 1.0]] for j in range(CONTEXT)]
    for j, i in enumerate(align(x, y)):
        columns[j] = "own" if i is None else [[i, 1.0]]
    return columns


def pair_map(tokenizer, source, target):
    """("swap" | "refine", columns) as acs chooses: a swap when the word counts agree."""
    if len(source.split()) == len(target.split()):
        return "swap", swap_map(tokenizer, source, target)
    return "refine", refine_map(tokenizer, source, target)
