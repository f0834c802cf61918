"""Build and load the C code of rnnkit, all of ``csrc/`` in one library, or say why not.

The sources: the gate math of one step and the loops over time of the fused paths
(``lstm_gates.c``, ``gru_gates.c``, ``rnn_gates.c``, with the helpers of ``gates.h``;
``mkl_loops.c``, the float32 loops with MKL's products; ``tiles.c``, the products on AMX
tiles), the dropout mask (``dropout.c``) and the single step of :class:`rnnkit.Stream`
(``step.c``). Each entry point is declared once, with its arguments named, in ``rnnkit.h``;
every source includes it, so the compiler holds the definitions to it, and
:func:`entry_points` reads it so that Python calls each function by those names.

The library is compiled once per machine into a cache directory (``$RNNKIT_CACHE``, else
``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit``) under a name that hashes the sources,
the headers, the flags and the CPU's feature flags, so an edit or another machine's
``-march=native`` never loads a stale library, and a library built once needs no compiler
(``$CC``, else ``cc``) again. Flag sets are tried in order: tuned for this CPU, then
portable; when none builds, :func:`library` returns None, warns once, and the callers take
their Python twins: the BPTT of ``lstm_bptt``, ``gru_bptt`` and ``rnn_bptt``, dropout's
torch mask, the stream's torch step.

Compiling and linking are two commands so that ``-ffast-math`` shapes the code only: linked
with it, gcc adds a start-up file that turns on flush-to-zero for the whole process.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
SOURCES = tuple(sorted(CSRC.glob("*.c")))
HEADERS = tuple(sorted(CSRC.glob("*.h")))  # hashed with the sources: an edited header rebuilds
DECLARATIONS = CSRC / "rnnkit.h"
# (compile flags, link flags): the first is vectorised for this CPU and splits large steps over
# torch's OpenMP threads; the second runs anywhere gcc or clang does, on one thread.
FLAG_SETS = (
    (["-O3", "-march=native", "-ffast-math", "-fopenmp"], ["-fopenmp", "-lm"]),
    (["-O2"], ["-lm"]),
)
# C type in rnnkit.h -> ctypes; every pointer is an address (an int, or None for NULL).
C_TYPES = {
    "void": None, "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "long": ctypes.c_long,
    "float": ctypes.c_float, "uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64,
}  # fmt: skip

_cache: dict = {}


def compiler() -> str:
    return os.environ.get("CC", "cc")


def cache_dir() -> Path:
    if "RNNKIT_CACHE" in os.environ:
        return Path(os.environ["RNNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def entry_points(header: Path = DECLARATIONS) -> dict:
    """name -> (return ctype, ((argument name, ctype), ...)) for each prototype of the header."""
    prototype = re.compile(r"^(\w+(?: int)?) (\w+)\((.*)\);$", re.MULTILINE)
    table = {}
    for result, name, arguments in prototype.findall(header.read_text()):
        pairs = [] if arguments == "void" else [_argument(a) for a in arguments.split(", ")]
        table[name] = (C_TYPES[result], tuple(pairs))
    return table


def _argument(declaration: str) -> tuple:
    """'const float *gates' -> ('gates', c_void_p); 'long batch' -> ('batch', c_long)."""
    ctype, name = declaration.replace("const ", "").rsplit(" ", 1)
    if name.startswith("*"):
        return name.lstrip("*"), ctypes.c_void_p
    return name, C_TYPES[ctype]


class EntryPoint:
    """One C function, called with every argument named: ``lib.lstm_forward(batch=..., ...)``.
    A tensor passes its address (it must be contiguous where C reads rows), None is NULL."""

    def __init__(self, function, name: str, result, arguments: tuple):
        function.restype, function.argtypes = result, [ctype for _, ctype in arguments]
        self.function, self.name = function, name
        self.names = tuple(argument for argument, _ in arguments)

    def __call__(self, **arguments):
        try:
            values = [_address(arguments[name]) for name in self.names]
        except KeyError as missing:
            raise TypeError(f"{self.name}() is missing the argument {missing}") from None
        if len(arguments) != len(self.names):
            unknown = sorted(set(arguments) - set(self.names))
            raise TypeError(f"{self.name}() takes no argument {', '.join(unknown)}")
        return self.function(*values)


_PLAIN = (int, bool, float, type(None))  # passed as they are; anything else is a tensor


def _address(value):
    return value if value.__class__ in _PLAIN else value.data_ptr()


class Library:
    """The loaded library: one :class:`EntryPoint` attribute per function of ``rnnkit.h``."""

    def __init__(self, path: Path):
        self.path, cdll = path, ctypes.CDLL(str(path))
        for name, (result, arguments) in entry_points().items():
            setattr(self, name, EntryPoint(getattr(cdll, name), name, result, arguments))


def _cpu() -> str:
    """What -march=native saw: the CPU's flags line, so a shared home never mixes CPUs."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line for line in lines if line.startswith("flags")), platform.machine())


def _library_path(flags: tuple) -> Path:
    identity = repr((flags, _cpu())).encode()
    sources = b"".join(source.read_bytes() for source in SOURCES + HEADERS)
    key = hashlib.sha256(sources + identity).hexdigest()[:16]
    return cache_dir() / f"rnnkit-{key}.so"


def _build(cc: str, flags: tuple) -> Path:
    """Compile and link into the cache unless already there; raise on failure."""
    target = _library_path(flags)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    compile_flags, link_flags = flags
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [str(Path(tmp) / f"{source.stem}.o") for source in SOURCES]
        lib = Path(tmp) / "rnnkit.so"
        commands = [
            [cc, *compile_flags, "-fPIC", "-c", str(source), "-o", obj]
            for source, obj in zip(SOURCES, objects, strict=True)
        ]
        commands.append([cc, "-shared", *objects, "-o", str(lib), *link_flags])
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(lib, target)  # atomic: a concurrent process sees all or nothing
    return target


def library() -> Library | None:
    """The loaded library, built at first use; None (with one warning) if it cannot be."""
    cc = compiler()
    if cc in _cache:
        return _cache[cc]
    errors = []
    for flags in FLAG_SETS:
        try:
            _cache[cc] = Library(_build(cc, flags))
            return _cache[cc]
        except (OSError, subprocess.SubprocessError, AttributeError) as error:
            detail = getattr(error, "stderr", b"") or b""
            errors.append(f"{' '.join(flags[0])}: {error} {detail.decode(errors='replace')}")
    _cache[cc] = None
    warnings.warn(
        "rnnkit could not build its C kernels, so each fused path (LSTM, GRU, RNN) falls "
        "back to the Python BPTT (slower, same results), dropout to torch's mask and "
        "rnnkit.Stream to its torch path:\n" + "\n".join(errors),
        RuntimeWarning,
        stacklevel=2,
    )
    return None
