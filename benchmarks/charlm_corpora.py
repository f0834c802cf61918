"""The grid of corpora the charlm defaults are measured on (docs/benchmarks.md, issue of
the defaults by corpus size): none of them is the corpus the defaults were first tuned on.

- ``shakespeare``: the complete works (5.1 MB, package ``shakespeare``);
- ``shakespeare-1mb`` and ``shakespeare-250kb``: whole plays from the start of the works
  in their sorted order, as many as come nearest 1 MB and 250 KB (7 plays, 0.94 MB; 2
  plays, 0.29 MB);
- ``stdlib``: the Python standard library's source;
- ``kjv``: the King James Bible (Debian's ``sword-text-kjv``);
- ``spanish``: the Reina-Valera 1909 (Debian's ``sword-text-sparv``);
- ``hello``: the lectures' toy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rnnkit.data.corpus import shakespeare_files

GRID = {
    "shakespeare": "shakespeare",
    "shakespeare-1mb": 1_000_000,
    "shakespeare-250kb": 250_000,
    "stdlib": "stdlib",
    "kjv": "sword:engKJV2006eb",
    "spanish": "sword:spaRV1909eb",
    "hello": "hello",
}


def corpus_spec(name: str, folder: str) -> str:
    """The ``--data`` of a grid corpus (a slice is copied into ``folder``); any other name
    is a corpus spec already."""
    size = GRID.get(name, name)
    if isinstance(size, str):
        return size
    out, total = Path(folder) / name, 0
    out.mkdir(parents=True, exist_ok=True)
    for play in shakespeare_files():
        length = len(play.read_text(encoding="utf-8"))
        if abs(total + length - size) > abs(total - size):
            break  # one more play would take the slice further from its size
        shutil.copy(play, out / play.name)
        total += length
    return str(out)
