"""Reading the user's files: one family of errors, and text decoded with the place of a bad byte;
writing a run's files atomically.

Every loader of :mod:`rnnkit.data` raises a subclass of :class:`DataError` (``CorpusError``,
``PairsError``, ``TableError``, ``SequenceError``, ``TagDataError``, ``ImageDataError``)
whose message names the file, the line, row or array where there is one, and the problem.
The command prints it as ``rnnkit: error: ...`` and exits with status 2; nothing from
inside numpy, torch or Pillow reaches the user as a traceback.

Text is read as bytes and decoded here, so that:
- a NUL byte means the file is binary (or UTF-16, which rnnkit does not read): an error
  naming the line and the byte offset, rather than a model trained on noise;
- a byte that is not UTF-8 is an error naming the line and the byte offset, rather than a
  bare ``UnicodeDecodeError`` or a silent U+FFFD.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path


class DataError(ValueError):
    """User data that cannot be used; the message names the file, the place and the problem."""


class CheckpointError(ValueError):
    """A checkpoint or run file that cannot be written or trusted; the message names it."""


def read_bytes(path: Path, error: type[DataError] = DataError) -> bytes:
    """The bytes of a file; a directory, a missing or an unreadable file is ``error``."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None


def line_of(raw: bytes, offset: int) -> int:
    """The 1-based line holding byte ``offset``; lines end at ``\n``, ``\r\n`` or ``\r``, as
    ``bytes.splitlines`` (and editors) have them."""
    before = raw[:offset]
    return before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1


def decode_text(path: Path, raw: bytes, error: type[DataError] = DataError) -> str:
    """``raw`` as UTF-8 text; a NUL byte or an invalid byte is ``error`` naming line and offset."""
    nul = raw.find(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if not 0 <= nul < err.start:
            bad = raw[err.start : err.end].hex(" ")
            raise error(
                f"{path}: not valid UTF-8 at byte offset {err.start}, line "
                f"{line_of(raw, err.start)} (bytes {bad}: {err.reason}); save the file as UTF-8"
            ) from None
    if nul >= 0:
        raise error(
            f"{path}: a NUL byte at byte offset {nul}, line {line_of(raw, nul)}: this looks "
            "like a binary file (or UTF-16 text), not UTF-8 text"
        )
    return text


def read_json(path: Path, kind: type = dict, error: type[DataError] = DataError):
    """The JSON value of a file (a run's ``config.json``, ``labels.json``, ...), which must be
    a ``kind``; a damaged file is ``error`` naming the file, the line and the problem."""
    text = decode_text(path, read_bytes(path, error), error)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(value, kind):
        raise error(f"{path}: expected a JSON {kind.__name__}, found a {type(value).__name__}")
    return value


# --- a run's files, written atomically ---


def write_json(path: Path, value, **dumps) -> None:
    """``value`` as JSON (``json.dumps`` options in ``dumps``) to ``path``, atomically, with a
    final newline: a run's ``vocab.json``, ``labels.json``, ``test.json`` and the like."""
    atomic_write(Path(path), (json.dumps(value, **dumps) + "\n").encode())


def atomic_write(path: Path, *chunks: bytes | memoryview) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, flush it to disk, then rename.

    A failed write (disk full, read-only directory) raises :class:`CheckpointError` and leaves
    the previous file as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_directory(path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def sync_directory(directory: Path) -> None:
    """Flush a rename to disk (POSIX: the directory entry is the directory's data)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # no directory handles here (Windows): the rename is all there is
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: Path, err: OSError) -> CheckpointError:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied: the run directory is read-only",
        errno.EPERM: "permission denied: the run directory is read-only",
    }.get(err.errno, err.strerror or str(err))
    kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
    return CheckpointError(f"{path}: could not write ({reason}); {kept}")
