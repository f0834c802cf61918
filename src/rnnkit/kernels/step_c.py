"""The compiled single step behind :class:`rnnkit.Stream`: build, load and lay out.

``csrc/step.c`` runs one time step of a whole stack of layers (and the head) in one call.
It is compiled by the C compiler at first use into a cache directory, ``$XDG_CACHE_HOME/
rnnkit`` or ``~/.cache/rnnkit`` (``RNNKIT_CACHE_DIR`` overrides both), first with
``-O3 -march=native`` and, if that fails, with portable flags; the library is named by a
hash of the source, the flags and the processor, so an edit or another machine builds
anew. When no compiler works, :func:`library` returns None and the stream takes its
torch path, the slow twin this code is tested against.

The compiler is ``$CC`` or ``gcc``. Everything here is plumbing; the math is in the C
file's comment and in :mod:`rnnkit.cells`.

Shape letters: K inputs of a matrix, N its rows (outputs), P the panel width.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "step.c"
PANEL = 64  # outputs per weight panel; must equal PANEL in step.c
KINDS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}
# Native: vectorised for this CPU, large matrices split over torch's OpenMP threads.
NATIVE_FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp")
PORTABLE_FLAGS = ("-O3", "-ffp-contract=fast")

_pointer = ctypes.c_void_p


class Stack(ctypes.Structure):
    """Mirror of ``Stack`` in step.c: sizes, then pointers into tensors Python keeps alive."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("layers", ctypes.c_int32),
        ("batch", ctypes.c_int32),
        ("input_size", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("gate_rows", ctypes.c_int32),
        ("head_size", ctypes.c_int32),
        ("padding", ctypes.c_int32),
        ("vocab", ctypes.c_int64),
        ("table", _pointer),
        ("embedding", _pointer),
        ("w_ih", _pointer),
        ("w_hh", _pointer),
        ("b_ih", _pointer),
        ("b_hh", _pointer),
        ("peep", _pointer),
        ("head_w", _pointer),
        ("head_b", _pointer),
        ("h", _pointer),
        ("c", _pointer),
        ("gx", _pointer),
        ("gh", _pointer),
        ("out", _pointer),
        ("tokens", _pointer),
    ]


def compiler() -> str:
    return os.environ.get("CC", "gcc")


def cache_dir() -> Path:
    if os.environ.get("RNNKIT_CACHE_DIR"):
        return Path(os.environ["RNNKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def library():
    """The step function of the compiled library, or None when it cannot be built."""
    return _load(compiler(), str(cache_dir()))


def matvec_threads(weights: int) -> int:
    """How many threads the compiled step splits its matrices over when it reads ``weights``
    weights in all (step.c, PARALLEL_WEIGHTS): torch's thread count for large stacks, else
    1; 1 without a library built with OpenMP."""
    step = library()
    if step is None:
        return 1
    count = ctypes.CDLL(str(step.path)).rnnkit_matvec_threads
    count.argtypes, count.restype = [ctypes.c_long], ctypes.c_int
    return count(weights)


@functools.cache
def _load(cc: str, directory: str):
    errors = []
    for flags in (NATIVE_FLAGS, PORTABLE_FLAGS):
        try:
            path = _build(cc, Path(directory), flags)
            step = ctypes.CDLL(str(path)).rnnkit_stream_step
        except (OSError, subprocess.CalledProcessError) as error:
            errors.append(_describe(error))
            continue
        step.argtypes, step.restype = [_pointer, _pointer], ctypes.c_int
        step.path = path  # matvec_threads loads the same library
        return step
    warnings.warn(
        f"rnnkit.Stream: could not build {SOURCE.name} ({'; '.join(errors)}); "
        "using the slower torch path",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _describe(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        lines = (error.stderr or "").strip().splitlines()
        return lines[-1] if lines else f"exit status {error.returncode}"
    return str(error)


def _build(cc: str, directory: Path, flags: tuple[str, ...]) -> Path:
    """Compile step.c into ``directory`` unless a library for this source and CPU is there."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(flags).encode() + _processor().encode())
    target = directory / f"step-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename, so that processes building at once never
    # load a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        command = [cc, *flags, "-std=c11", "-shared", "-fPIC", str(SOURCE), "-o", partial]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _processor() -> str:
    """What ``-march=native`` depends on: the machine and its instruction-set flags."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return platform.machine() + line
    except OSError:
        pass
    return platform.machine() + platform.processor()


# --- layout ---------------------------------------------------------------------------------


def panels(weight: Tensor) -> Tensor:
    """(N, K) -> (ceil(N / P), K, P) float32: column j of panel p is row p * P + j.

    A matrix-vector product then reads the weights front to back, P outputs at a time.
    """
    rows, inputs = weight.shape
    padded = torch.zeros(padded_size(rows), inputs, dtype=torch.float32)
    padded[:rows] = weight.detach().float()
    return padded.view(-1, PANEL, inputs).transpose(1, 2).contiguous()  # (N/P, K, P)


def padded_vector(vector: Tensor | None, size: int) -> Tensor:
    """A bias as the C side reads it: float32, zero-padded to whole panels (zeros if None)."""
    out = torch.zeros(padded_size(size), dtype=torch.float32)
    if vector is not None:
        out[:size] = vector.detach().float()
    return out


def padded_size(rows: int) -> int:
    return -(-rows // PANEL) * PANEL


def pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def pointer_array(tensors) -> ctypes.Array:
    return (_pointer * len(tensors))(*(pointer(t) for t in tensors))
