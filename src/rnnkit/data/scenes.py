"""Generated scenes for captioning: one to three shapes on a dark ground, and what is where.

Each scene places one to three objects, each in its own cell of a 3 x 3 grid (so "at the
top left" is always true of what is drawn), with a shape, a colour and a size, and says so
in three phrasings:

- a list: "a small red circle at the top left and a large blue square at the bottom right";
- the same after "there is";
- relations between neighbours in reading order: "a small red circle above and left of a
  large blue square" (one object: "a single small red circle at the top left").

Objects are listed in reading order (top row first, left to right), so a caption is a
function of the scene. Scenes are made from seeds, each from its own ``(seed, split,
index)``, so any scene can be drawn again alone.

Unseen combinations, two kinds, neither ever drawn in a training or validation scene:

- ``test``: a thing at a place. :func:`held_out_places` picks one grid cell for each
  (shape, colour) pair; every test scene holds one such thing in its held-out cell (and
  otherwise things as in training). Every word of the caption, every shape-colour pair and
  every cell is seen in training, only not together.
- ``test-pairs``: a shape in a colour. :func:`held_out_pairs` picks one colour for each
  shape; no training scene holds such a pair, every ``test-pairs`` scene one. This is the
  harder split (a decoder learns that "purple" is never followed by "circle"), as in
  CLEVR CoGenT (Johnson et al. 2017, section 4.7).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

NAME = "scenes"
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (165, 60, 205),
}
BACKGROUND = (20, 20, 20)
SIZES = {"small": (0.50, 0.60), "large": (0.85, 0.95)}  # radius, as a share of half a cell
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")
SPLITS = ("train", "val", "test", "test-pairs")


@dataclass(frozen=True)
class Thing:
    """One drawn object; positions and radius are shares of the image's side."""

    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    size: str  # small or large
    row: int  # grid row, 0 at the top
    column: int  # grid column, 0 on the left
    x: float  # centre, 0 at the left edge, 1 at the right
    y: float  # centre, 0 at the top edge, 1 at the bottom
    radius: float  # half the width of the shape

    def words(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


Scene = tuple[Thing, ...]  # in reading order


def held_out_pairs(seed: int) -> list[tuple[str, str]]:
    """One (shape, colour) pair per shape, distinct colours: never seen in training."""
    colours = sorted(COLOURS)
    random.Random(f"held-out:{seed}").shuffle(colours)
    return list(zip(SHAPES, colours, strict=False))


def place(rng: random.Random, shape: str, colour: str, cell: int) -> Thing:
    """A thing of a random size somewhere inside grid cell ``cell`` (0..8, reading order)."""
    size = rng.choice(sorted(SIZES))
    half = 1 / 6  # half a cell, as a share of the image
    radius = rng.uniform(*SIZES[size]) * half
    room = (half - radius) * 0.5  # the centre moves at most this far from the cell's centre
    row, column = divmod(cell, 3)
    x = (2 * column + 1) * half + rng.uniform(-room, room)
    y = (2 * row + 1) * half + rng.uniform(-room, room)
    return Thing(shape, colour, size, row, column, x, y, radius)


def held_out_places(seed: int) -> dict[tuple[str, str], int]:
    """For each (shape, colour) pair seen in training, the grid cell it is never seen in."""
    rng, held = random.Random(f"held-out-places:{seed}"), held_out_pairs(seed)
    pairs = [(s, c) for s in SHAPES for c in sorted(COLOURS) if (s, c) not in held]
    return {pair: rng.randrange(9) for pair in pairs}


def training_pair(rng: random.Random, cell: int, places: dict) -> tuple[str, str]:
    """A (shape, colour) pair as training scenes have them in ``cell``."""
    return rng.choice([pair for pair, held in places.items() if held != cell])


def make_scene(rng: random.Random, seed: int, split: str) -> Scene:
    """1-3 things in distinct cells as in training; a test scene has one of them unseen."""
    count, places = rng.randint(1, 3), held_out_places(seed)
    novel = []  # (pair, cell) never seen in training
    if split == "test":
        pair = rng.choice(sorted(places))
        novel = [(pair, places[pair])]
    elif split == "test-pairs":
        novel = [(rng.choice(held_out_pairs(seed)), rng.randrange(9))]
    free = [cell for cell in range(9) if cell not in [c for _, c in novel]]
    cells = rng.sample(free, count - len(novel))
    things = novel + [(training_pair(rng, cell, places), cell) for cell in cells]
    return tuple(place(rng, s, c, cell) for (s, c), cell in sorted(things, key=lambda t: t[1]))


def scene(seed: int, split: str, index: int) -> Scene:
    """Scene ``index`` of a split: the same arguments always give the same scene."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return make_scene(random.Random(f"scene:{seed}:{split}:{index}"), seed, split)


# --- captions ---


def position(thing: Thing) -> str:
    """Where a thing is, in the words of its grid cell: "at the top left", "in the centre"."""
    row, column = ROWS[thing.row], COLUMNS[thing.column]
    if row == "middle" and column == "centre":
        return "in the centre"
    if row == "middle":
        return f"on the {column}"
    if column == "centre":
        return f"at the {row}"
    return f"at the {row} {column}"


def relation(first: Thing, second: Thing) -> str:
    """Where ``first`` is from ``second``, the next thing in reading order."""
    if first.row == second.row:
        return "left of"
    if first.column == second.column:
        return "above"
    return "above and left of" if first.column < second.column else "above and right of"


def joined(parts: list[str]) -> str:
    """ "a", "a and b", "a , b and c"."""
    if len(parts) == 1:
        return parts[0]
    return " , ".join(parts[:-1]) + " and " + parts[-1]


def captions(things: Scene) -> list[str]:
    """The three phrasings of a scene (module docstring)."""
    listed = joined([f"a {t.words()} {position(t)}" for t in things])
    if len(things) == 1:
        related = f"a single {things[0].words()} {position(things[0])}"
    else:
        related = f"a {things[0].words()}"
        for i, (first, second) in enumerate(zip(things, things[1:], strict=False)):
            which = "" if i == 0 else ", which is "
            related += f" {which}{relation(first, second)} a {second.words()}"
    return [listed, f"there is {listed}", " ".join(related.split())]


# --- drawing ---


def outline(thing: Thing, side: int) -> tuple[str, list[tuple[float, float]]]:
    """Pillow's drawing call and its points, in pixels."""
    x, y, r = thing.x * side, thing.y * side, thing.radius * side
    if thing.shape == "circle":
        return "ellipse", [(x - r, y - r), (x + r, y + r)]
    if thing.shape == "square":
        s = 0.9 * r  # a little smaller than the circle's box, so their areas are closer
        return "rectangle", [(x - s, y - s), (x + s, y + s)]
    return "polygon", [(x, y - r), (x + r, y + r), (x - r, y + r)]  # pointing up


def draw(things: Scene, side: int) -> np.ndarray:
    """The scene as uint8 (side, side, 3) pixels, without anti-aliasing (exact colours)."""
    if side < 24:
        raise ValueError(f"scenes need images of at least 24 pixels a side, got {side}")
    image = Image.new("RGB", (side, side), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for thing in things:
        call, points = outline(thing, side)
        getattr(pen, call)(points, fill=COLOURS[thing.colour])
    return np.asarray(image, dtype=np.uint8)


@dataclass
class SceneSplit:
    """``count`` scenes of one split, drawn when asked for (they cost less to draw than to
    keep)."""

    seed: int
    split: str
    count: int
    side: int  # pixels per side

    def __len__(self) -> int:
        return self.count

    def things(self, index: int) -> Scene:
        return scene(self.seed, self.split, index)

    def captions(self, index: int) -> list[str]:
        return captions(self.things(index))

    def pixels(self, indices: list[int]) -> np.ndarray:
        """uint8 (B, side, side, 3)."""
        return np.stack([draw(self.things(i), self.side) for i in indices])
