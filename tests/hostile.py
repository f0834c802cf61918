"""What the hostile-input tests share: hypothesis settings and how a loader's outcome is read."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from rnnkit.data import DataError

# Deterministic and offline: derandomised, no example database.
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


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
