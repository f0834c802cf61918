"""What the hostile-input tests share: how a loader's outcome is read. (Their hypothesis
settings are conftest.py's profile.)"""

from __future__ import annotations

from rnnkit.data import DataError


def outcome(load, *args):
    """(what ``load`` returned, "") or (None, the DataError's message)."""
    try:
        return load(*args), ""
    except DataError as err:
        return None, str(err)


def first_bad_line(raw: bytes) -> int:
    """The line (``bytes.splitlines`` numbering) of the first NUL or non-UTF-8 byte, else 0."""
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
        if b"\0" in line:
            return number
    return 0
