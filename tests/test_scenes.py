"""The scene generator: its captions say what its pixels show, and its splits are honest."""

import re

import numpy as np
import pytest

from rnnkit.data import scenes

# what the captions call each grid cell, written here apart from the generator's own words
CELLS = {
    "at the top left": (0, 0),
    "at the top": (0, 1),
    "at the top right": (0, 2),
    "on the left": (1, 0),
    "in the centre": (1, 1),
    "on the right": (1, 2),
    "at the bottom left": (2, 0),
    "at the bottom": (2, 1),
    "at the bottom right": (2, 2),
}
WORDS = r"(small|large) (red|green|blue|yellow|purple) (circle|square|triangle)"
LISTED = re.compile(rf"a {WORDS} ({'|'.join(sorted(CELLS, key=len, reverse=True))})")


def read_cell(cell: np.ndarray) -> tuple[str, str, str] | None:
    """(size, colour, shape) of the one thing in a cell's pixels, or None if it is empty."""
    ink = np.any(cell != scenes.BACKGROUND, axis=2)  # (h, w)
    if not ink.any():
        return None
    colours = {tuple(int(v) for v in p) for p in cell[ink]}
    assert len(colours) == 1, f"a cell holds one flat colour, found {colours}"
    (rgb,) = colours
    colour = next(n for n, known in scenes.COLOURS.items() if known == rgb)
    rows, columns = np.nonzero(ink)
    height, width = np.ptp(rows) + 1, np.ptp(columns) + 1
    fill = ink.sum() / (height * width)  # of the bounding box: 1 square, pi/4 circle, 1/2 triangle
    shape = "square" if fill > 0.93 else "circle" if fill > 0.68 else "triangle"
    size = "large" if width > 0.7 * cell.shape[1] else "small"
    return size, colour, shape


def read_image(pixels: np.ndarray) -> dict[tuple[int, int], tuple[str, str, str]]:
    """What is drawn in each grid cell, read from the pixels alone."""
    third = pixels.shape[0] // 3
    found = {}
    for row in range(3):
        for column in range(3):
            cell = pixels[row * third : (row + 1) * third, column * third : (column + 1) * third]
            thing = read_cell(cell)
            if thing:
                found[(row, column)] = thing
    return found


def read_caption(text: str) -> dict[tuple[int, int], tuple[str, str, str]]:
    """What the listing caption says is in each grid cell."""
    said = {
        CELLS[where]: (size, colour, shape) for size, colour, shape, where in LISTED.findall(text)
    }
    assert len(LISTED.findall(text)) == len(said), f"two things in one cell: {text!r}"
    return said


@pytest.mark.parametrize("side", [48, 96])
@pytest.mark.parametrize("split", scenes.SPLITS)
def test_captions_say_what_the_image_shows(split, side):
    for index in range(40):
        things = scenes.scene(3, split, index)
        listed, there_is, related = scenes.captions(things)
        drawn = read_image(scenes.draw(things, side))
        assert 1 <= len(drawn) <= 3
        assert read_caption(listed) == drawn, (listed, drawn)
        assert there_is == "there is " + listed
        assert related.startswith(f"a {'single ' if len(drawn) == 1 else ''}")
        described = re.findall(WORDS, related)
        cells = sorted(drawn)  # reading order
        assert described == [drawn[c] for c in cells], related


def test_relations_match_the_positions_drawn():
    checked = 0
    for index in range(200):
        things = scenes.scene(5, "train", index)
        cells = sorted(read_image(scenes.draw(things, 48)))
        if len(cells) != 2:
            continue
        (r1, c1), (r2, c2) = cells
        said = scenes.captions(things)[2]
        if r1 == r2:
            assert " left of " in said and "above" not in said
        elif c1 == c2:
            assert " above a " in said
        else:
            side = "left" if c1 < c2 else "right"
            assert f" above and {side} of " in said
        checked += 1
    assert checked > 30


def test_held_out_pairs_are_one_per_shape_with_distinct_colours():
    held = scenes.held_out_pairs(1)
    assert [s for s, _ in held] == list(scenes.SHAPES)
    assert len({c for _, c in held}) == len(scenes.SHAPES)
    assert scenes.held_out_pairs(1) == held and scenes.held_out_pairs(2) != held
    places = scenes.held_out_places(1)
    assert len(places) == 15 - 3 and not set(places) & set(held)


def kinds(things) -> tuple[set, set]:
    """The (shape, colour) pairs and (shape, colour, cell) triples of a scene."""
    pairs = {(t.shape, t.colour) for t in things}
    return pairs, {(t.shape, t.colour, 3 * t.row + t.column) for t in things}


def test_the_test_splits_hold_combinations_never_seen_in_training():
    held = set(scenes.held_out_pairs(7))
    places = {(*pair, cell) for pair, cell in scenes.held_out_places(7).items()}
    for index in range(300):
        for split in ("train", "val"):
            pairs, triples = kinds(scenes.scene(7, split, index))
            assert not pairs & held and not triples & places, (split, index)
        pairs, triples = kinds(scenes.scene(7, "test", index))
        assert not pairs & held and len(triples & places) == 1, index  # a thing at a new place
        pairs, triples = kinds(scenes.scene(7, "test-pairs", index))
        assert pairs & held and not triples & places, index  # a new shape-colour pair


def test_scenes_come_from_their_seeds():
    first = [scenes.scene(1, "train", i) for i in range(20)]
    assert first == [scenes.scene(1, "train", i) for i in range(20)]
    assert first != [scenes.scene(2, "train", i) for i in range(20)]
    assert first != [scenes.scene(1, "val", i) for i in range(20)]
    made = scenes.SceneSplit(1, "train", 20, 48)
    assert made.pixels([3, 4]).shape == (2, 48, 48, 3) and made.pixels([3]).dtype == np.uint8
    assert np.array_equal(made.pixels([3])[0], scenes.draw(first[3], 48))


def test_counts_and_bad_arguments():
    counts = {len(scenes.scene(1, "train", i)) for i in range(100)}
    assert counts == {1, 2, 3}
    with pytest.raises(ValueError, match="split must be one of"):
        scenes.scene(1, "dev", 0)
    with pytest.raises(ValueError, match="at least 24 pixels"):
        scenes.draw(scenes.scene(1, "train", 0), 16)
