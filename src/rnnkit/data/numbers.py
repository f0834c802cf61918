"""numbers-en-es: numbers in English words -> the same numbers in Spanish words.

"three hundred and forty-two" -> "trescientos cuarenta y dos";
"seventy thousand and fifteen" -> "setenta mil quince". Both sides come from the
``num2words`` package. The data set is small and exact, yet it needs what translation
needs: words reorder ("and" disappears, "thousand" moves), agree ("doscientos" but
"doscientas" never appears here; "uno" / "un millón") and change length (1 to over 15 tokens).

Numbers are drawn with a log-uniform number of digits (every number below 1,000, then
as many with 4, 5 and 6 digits each), so short and long sentences are both common; the
split is by number, so no test number was seen in training.
"""

from __future__ import annotations

import random
from pathlib import Path

from rnnkit.data.pairs import Pair, Splits

NAME = "numbers-en-es"
SMALL = 1000  # every number below this is in the data set
DIGITS = (4, 5, 6)  # then this many digits, drawn evenly among these


def pair(number: int) -> Pair:
    """(English words, Spanish words) for ``number``."""
    from num2words import num2words

    return num2words(number, lang="en"), num2words(number, lang="es")


def draw_numbers(count: int, seed: int) -> list[int]:
    """``count`` distinct numbers below 10**6 in a seeded random order (see the docstring)."""
    if count < 3:
        raise ValueError(f"numbers-en-es needs at least 3 numbers, got {count}")
    rng = random.Random(seed)
    chosen = set(range(min(SMALL, count)))
    while len(chosen) < count:
        digits = rng.choice(DIGITS)
        chosen.add(rng.randrange(10 ** (digits - 1), 10**digits))
    numbers = sorted(chosen)
    rng.shuffle(numbers)
    return numbers


def split_numbers(count: int, val_fraction: float, test_fraction: float, seed: int):
    """(train, validation, test) lists of distinct numbers: the split is by number."""
    numbers = draw_numbers(count, seed)
    n_test = max(1, round(count * test_fraction))
    n_val = max(1, round(count * val_fraction))
    if n_test + n_val >= count:
        raise ValueError(f"{count} numbers leave none for training after {n_test + n_val} held out")
    return numbers[n_test + n_val :], numbers[n_test : n_test + n_val], numbers[:n_test]


def make_splits(count: int, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """numbers-en-es split by number: the test and validation numbers are never trained on."""
    train, val, test = split_numbers(count, val_fraction, test_fraction, seed)
    return Splits([pair(n) for n in train], [pair(n) for n in val], [pair(n) for n in test])


def write_tsv(path: str | Path, splits: Splits) -> int:
    """Write ``english<TAB>spanish<TAB>split`` lines; return how many."""
    rows = [(p, name) for name in ("train", "val", "test") for p in getattr(splits, name)]
    text = "".join(f"{en}\t{es}\t{name}\n" for (en, es), name in rows)
    Path(path).write_text(text, encoding="utf-8")
    return len(rows)
