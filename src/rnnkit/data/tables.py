"""CSV and TSV tables with errors that name the file, the row and the column.

A table is read whole into memory, as text; the tasks pick and convert the columns they
need. Compressed files are read as they are, by their suffix (``.gz``, ``.bz2``, ``.xz``,
``.zip`` holding one file). The delimiter is a tab for ``.tsv``/``.tab`` names, a comma for
``.csv`` names, and sniffed from the first lines otherwise.

A file that cannot be decompressed, holds a NUL byte (a binary file) or a byte that is not
UTF-8 is an error naming it (and the line and byte offset of a bad byte).

Row numbers in messages are the line of the file on which that record starts (the header is
line 1), so an editor can jump to it even when quoted fields span several lines.

Shared helpers (other tasks call them): :func:`read_table`, :meth:`Table.column`,
:meth:`Table.floats`, :class:`TableError`.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import math
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.files import DataError, decode_text

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What a damaged file raises while it is decompressed (encrypted zip: RuntimeError; zip
# methods Python lacks: NotImplementedError).
UNREADABLE = (OSError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, RuntimeError)
UNREADABLE += (NotImplementedError,)
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long reviews in one field


class TableError(DataError):
    """A table that cannot be used; the message names the file and, where known, row and column."""


def _plain_name(path: Path) -> str:
    """The file name without its compression suffix: ``reviews.tsv.gz`` -> ``reviews.tsv``."""
    return path.stem if path.suffix in (*OPENERS, ".zip") else path.name


def read_raw(path: Path) -> bytes:
    """The file's bytes, decompressed by its suffix; a file that cannot be is a TableError."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if path.suffix != ".zip":
            with OPENERS.get(path.suffix, open)(path, "rb") as f:
                return f.read()
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise TableError(f"{path}: a .zip table must hold exactly one file, found {names}")
            return archive.read(names[0])
    except UNREADABLE as err:
        raise TableError(f"{path}: cannot be read as a {path.suffix} file ({err})") from None


def read_text(path: Path) -> str:
    """The file as UTF-8 text, a byte-order mark dropped; a binary or non-UTF-8 file is an
    error naming the line and byte offset (of the decompressed text)."""
    return decode_text(path, read_raw(path), TableError).removeprefix("\ufeff")


def _delimiter(path: Path, sample: str) -> str:
    name = _plain_name(path).lower()
    if name.endswith((".tsv", ".tab")):
        return "\t"
    if name.endswith(".csv"):
        return ","
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


@dataclass
class Table:
    """A header and text rows; ``lines[i]`` is the file line on which row ``i`` starts."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def index(self, name: str) -> int:
        """The position of column ``name``; a missing column names the ones there are."""
        if name not in self.header:
            raise TableError(
                f"{self.path}: no column {name!r}; the header has {self.header} "
                "(choose the columns with the task's column options)"
            )
        return self.header.index(name)

    def column(self, name: str) -> list[str]:
        """The text of column ``name``, one entry per row."""
        i = self.index(name)
        return [row[i] for row in self.rows]

    def where(self, row: int, name: str) -> str:
        """``file, line N, column 'name'`` for messages about one cell."""
        return f"{self.path}, line {self.lines[row]}, column {name!r}"

    def floats(self, name: str) -> list[float]:
        """Column ``name`` as numbers; empty, non-numeric, NaN or infinite cells are errors."""
        values = []
        for row, text in enumerate(self.column(name)):
            try:
                value = float(text)
            except ValueError:
                raise TableError(
                    f"{self.where(row, name)}: {short(text)} is not a number"
                ) from None
            if not math.isfinite(value):
                raise TableError(f"{self.where(row, name)}: {short(text)} is not a finite number")
            values.append(value)
        return values


def short(text: str, width: int = 40) -> str:
    """``text`` quoted, cut to ``width`` characters, for error messages."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _records(reader) -> tuple[list[list[str]], list[int]]:
    rows, lines, start = [], [], reader.line_num + 1
    for row in reader:
        if row:  # blank lines are skipped, as csv.DictReader does
            rows.append(row)
            lines.append(start)
        start = reader.line_num + 1
    return rows, lines


def read_table(path: str | Path, delimiter: str | None = None) -> Table:
    """Read a CSV/TSV (compressed or not) with a header line; check every row's width."""
    path = Path(path)
    text = read_text(path)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter or _delimiter(path, text[:8192]))
    try:
        header = next(reader, None)
        if not header:
            raise TableError(f"{path}: empty file (a table needs a header line and rows)")
        rows, lines = _records(reader)
    except csv.Error as err:
        raise TableError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    header = [h.strip() for h in header]
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise TableError(
                f"{path}, line {line}: {len(row)} fields where the header has {len(header)}"
            )
    if not rows:
        raise TableError(f"{path}: a header but no rows")
    return Table(path, header, rows, lines)
