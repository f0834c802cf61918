"""CSV and TSV tables with errors that name the file, the row and the column.

A table is read whole into memory, as text; the tasks pick and convert the columns they
need. Compressed files are read as they are, by their suffix (``.gz``, ``.bz2``, ``.xz``,
``.zip`` holding one file). The delimiter is a tab for ``.tsv``/``.tab`` names, a comma for
``.csv`` names, and sniffed from the first lines otherwise. JSON lines (``.jsonl``,
``.ndjson``: one object per line) are read as a table whose header is the first object's keys.

The first line is the header unless ``header=False`` (columns are then named by their
position, ``1``, ``2``, ...) or, with ``header=None``, unless it looks like a record: one
of its fields is longer than any header would be, or recurs in its column below (a label).
A column is asked for by name or, where no column has that name, by its 1-based position.

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
import json
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
        """The position of column ``name`` (or of the 1-based position ``name``); a missing
        column names the ones there are, each cut short."""
        if name in self.header:
            return self.header.index(name)
        if name.isdigit() and 1 <= int(name) <= len(self.header):
            return int(name) - 1
        names = ", ".join(short(h) for h in self.header)
        raise TableError(
            f"{self.path}: no column {name!r}; the first line has {len(self.header)} fields "
            f"[{names}] (choose the columns by name or position with the task's column "
            "options; a file without a header line: --header no)"
        )

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


def read_table(path: str | Path, delimiter: str | None = None, header: bool | None = True):
    """Read a CSV/TSV or JSON lines file (compressed or not) into a :class:`Table`; check
    every row's width. ``header``: True, False, or None to tell by the first line."""
    path = Path(path)
    text = read_text(path)
    if _plain_name(path).lower().endswith((".jsonl", ".ndjson")):
        return _json_lines(path, text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter or _delimiter(path, text[:8192]))
    try:
        rows, lines = _records(reader)
    except csv.Error as err:
        raise TableError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise TableError(f"{path}: empty file (a table needs a header line and rows)")
    if header is None:
        header = not looks_like_record(rows[0], rows[1:1001])
    if header:
        return _checked(path, [h.strip() for h in rows[0]], rows[1:], lines[1:])
    return _checked(path, [str(i + 1) for i in range(len(rows[0]))], rows, lines)


HEADER_WIDTH = 100  # no column name is longer than this; a text field often is


def looks_like_record(first: list[str], below: list[list[str]]) -> bool:
    """Whether a first line is data: a field longer than a name would be, or a value its
    column holds again below (a label such as ``1`` or ``pos``)."""
    if any(len(field) > HEADER_WIDTH for field in first):
        return True
    for i, field in enumerate(first):
        column = [row[i] for row in below if i < len(row)]
        if field.strip() and field in column:
            return True
    return False


def _json_lines(path: Path, text: str) -> Table:
    """One JSON object per line; the header is the first object's keys, values as text."""
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TableError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise TableError(f"{path}, line {number}: expected a JSON object, found {short(line)}")
        records.append(record)
        lines.append(number)
    if not records:
        raise TableError(f"{path}: empty file (JSON lines need one object per line)")
    header = list(records[0])
    for record, line in zip(records, lines, strict=True):
        if list(record) != header and set(record) != set(header):
            raise TableError(
                f"{path}, line {line}: keys {sorted(record)} where line "
                f"{lines[0]} has {sorted(header)}"
            )
    text_of = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
    return _checked(path, header, [[text_of(r[k]) for k in header] for r in records], lines)


def _checked(path: Path, header: list[str], rows: list[list[str]], lines: list[int]) -> Table:
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise TableError(
                f"{path}, line {line}: {len(row)} fields where the header has {len(header)}"
            )
    if not rows:
        raise TableError(f"{path}: a header but no rows")
    return Table(path, header, rows, lines)
