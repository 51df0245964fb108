"""The shapes demonstrator's captioned scenes, drawn deterministically from a seed.

This is the training-side twin of acs's `shapes` scene generator (acs-builder/src/judge/shapes/
scene.rs): the same SplitMix64 stream, the same draws in the same order and the same float64
geometry, so `acs model scenes` and this module draw the same pixels and captions for a seed
(tests/python/test_demonstrator.py checks it). The grammar and vocabulary are SPEC.md's
"The shapes demonstrator" section.
"""

import numpy as np

COLOURS = {
    "red": (230, 25, 25),
    "orange": (245, 130, 20),
    "yellow": (245, 220, 30),
    "green": (40, 180, 50),
    "blue": (30, 70, 230),
    "purple": (140, 40, 200),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "", "large"]  # the middle size is not spoken
SIZE_RADIUS = [7.0, 9.0, 12.0]  # half the bounding box, on a 64-pixel canvas
POSITIONS = ["on the left", "on the right", "at the top", "at the bottom", "in the center"]
POSITION_CENTRE = [(16.0, 32.0), (48.0, 32.0), (32.0, 16.0), (32.0, 48.0), (32.0, 32.0)]
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
BACKGROUND_NAMES = list(BACKGROUNDS)
# A regular five-pointed star, point up, inner radius 0.382 of the outer one (unit outer radius).
STAR = [
    (0.0, -1.0), (0.224534, -0.309044), (0.951057, -0.309017), (0.363304, 0.118044),
    (0.587785, 0.809017), (0.0, 0.382), (-0.587785, 0.809017), (-0.363304, 0.118044),
    (-0.951057, -0.309017), (-0.224534, -0.309044),
]
# (colour, shape, position) combinations that never appear in training scenes.
HELD_OUT = [
    ("red", "triangle", "on the right"),
    ("orange", "circle", "on the left"),
    ("yellow", "star", "at the top"),
    ("green", "square", "on the right"),
    ("blue", "star", "on the left"),
    ("purple", "circle", "at the bottom"),
]
MASK64 = (1 << 64) - 1


class SplitMix64:
    """acs's SplitMix64 stream (runtime/rng.rs)."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return self.next_u64() % n


def article(word):
    return "an" if word[0] in "aeiou" else "a"


class SceneObject:
    def __init__(self, colour, shape, size, position, dx, dy):
        self.colour, self.shape, self.size, self.position, self.dx, self.dy = colour, shape, size, position, dx, dy

    def phrase(self, spoken_where):
        words = [w for w in (SIZES[self.size], self.colour, self.shape) if w]
        text = f"{article(words[0])} {' '.join(words)}"
        return f"{text} {POSITIONS[self.position]}" if spoken_where else text

    def combination(self):
        return (self.colour, self.shape, POSITIONS[self.position])


class Scene:
    def __init__(self, background, objects, spoken_where):
        self.background, self.objects, self.spoken_where = background, objects, spoken_where

    def caption(self):
        phrases = " and ".join(o.phrase(self.spoken_where) for o in self.objects)
        return f"{phrases} on a {self.background} background"

    def is_held_out(self):
        return any(o.combination() in HELD_OUT for o in self.objects)

    def render(self, size=64):
        """uint8 array [size, size, 3]."""
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:, :] = BACKGROUNDS[self.background]
        for obj in self.objects:
            image[object_mask(obj, size)] = COLOURS[obj.colour]
        return image


def draw_scene(seed):
    """The scene of a seed (SPEC.md grammar): one or two objects on a plain background."""
    rng = SplitMix64(seed)
    background = BACKGROUND_NAMES[rng.below(3)]
    count = 1 + rng.below(2)
    drawn = []
    for _ in range(count):
        colour = COLOUR_NAMES[rng.below(6)]
        shape = SHAPES[rng.below(4)]
        size = rng.below(3)
        dx = rng.below(5) - 2
        dy = rng.below(5) - 2
        drawn.append((colour, shape, size, dx, dy))
    if count == 1:
        positions = [rng.below(5)]
        spoken = rng.below(4) != 0
    else:
        positions = [0, 1]
        spoken = rng.below(2) == 0
    objects = [SceneObject(c, s, z, p, dx, dy) for (c, s, z, dx, dy), p in zip(drawn, positions)]
    return Scene(background, objects, spoken)


def object_mask(obj, size=64):
    """Boolean [size, size]: the pixels whose centres lie inside the object."""
    scale = size / 64.0
    cx, cy = POSITION_CENTRE[obj.position]
    cx = (cx + obj.dx) * scale
    cy = (cy + obj.dy) * scale
    r = SIZE_RADIUS[obj.size] * scale
    coords = np.arange(size, dtype=np.float64) + 0.5
    px = coords[None, :].repeat(size, axis=0)
    py = coords[:, None].repeat(size, axis=1)
    if obj.shape == "circle":
        return (px - cx) * (px - cx) + (py - cy) * (py - cy) <= r * r
    if obj.shape == "square":
        return (np.abs(px - cx) <= r) & (np.abs(py - cy) <= r)
    if obj.shape == "triangle":
        top = cy - r
        inside_rows = (py >= top) & (py <= cy + r)
        return inside_rows & (np.abs(px - cx) <= (py - top) / (2.0 * r) * r)
    inside = np.zeros((size, size), dtype=bool)
    vertices = [(cx + vx * r, cy + vy * r) for vx, vy in STAR]
    for i, (xi, yi) in enumerate(vertices):
        xj, yj = vertices[i - 1]
        crosses = (yi > py) != (yj > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            edge_x = (xj - xi) * (py - yi) / (yj - yi) + xi
        inside ^= crosses & (px < edge_x)
    return inside


def vocabulary():
    """Every word a caption may use."""
    words = {"a", "an", "and", "on", "the", "at", "in", "background"}
    words.update(COLOUR_NAMES, SHAPES, BACKGROUND_NAMES, (s for s in SIZES if s))
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
