"""Build and load the C gate math of the fused paths (:mod:`rnnkit.kernels.lstm_fused`,
:mod:`~rnnkit.kernels.gru_fused`, :mod:`~rnnkit.kernels.rnn_fused`), or say why not.

The C sources (``csrc/lstm_gates.c``, ``gru_gates.c``, ``rnn_gates.c``, with the shared
header ``gates.h``; ``dropout.c``, the mask of :mod:`rnnkit.kernels.dropout`; and
``mkl_loops.c``, the float32 loops over time with MKL's products; ``tiles.c``, the
products on AMX tiles, their packing, and the weight gradients of mixed precision) are
compiled once per machine into one library in a cache directory (``$RNNKIT_CACHE``, else
``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit``) under a name that hashes the sources
and the header, the compiler, the flags and the CPU's feature flags, so an edit or another
machine's ``-march=native`` never loads a stale library. The compiler is ``$CC``, else
``cc``. Flag sets are tried in order: tuned for this CPU, then portable; when none builds
(no compiler, say) :func:`library` returns None, warns once, and the callers take the
Python BPTT of :mod:`rnnkit.kernels` (``lstm_bptt``, ``gru_bptt``, ``rnn_bptt``), their
slow twins, and dropout its torch twin.

Compiling and linking are two commands so that ``-ffast-math`` shapes the code only: linked
with it, gcc adds a start-up file that turns on flush-to-zero for the whole process.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
NAMES = ("lstm_gates.c", "gru_gates.c", "rnn_gates.c", "dropout.c", "mkl_loops.c", "tiles.c")
SOURCES = tuple(CSRC / name for name in NAMES)
HEADERS = (CSRC / "gates.h",)  # hashed with the sources: an edited header rebuilds
# (compile flags, link flags): the first is vectorised for this CPU (with glibc's vector
# tanh for float64) and splits large steps over torch's OpenMP threads; the second runs
# anywhere gcc or clang does, on one thread.
FLAG_SETS = (
    (["-O3", "-march=native", "-ffast-math", "-fopenmp"], ["-fopenmp", "-lmvec", "-lm"]),
    (["-O2"], ["-lm"]),
)

_cache: dict = {}


def compiler() -> str:
    return os.environ.get("CC", "cc")


def cache_dir() -> Path:
    if "RNNKIT_CACHE" in os.environ:
        return Path(os.environ["RNNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnkit"


def _cpu() -> str:
    """What -march=native saw: the CPU's flags line, so a shared home never mixes CPUs."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line for line in lines if line.startswith("flags")), platform.machine())


def _library_path(cc: str, flags: tuple) -> Path:
    identity = repr((cc, flags, _cpu())).encode()
    sources = b"".join(source.read_bytes() for source in SOURCES + HEADERS)
    key = hashlib.sha256(sources + identity).hexdigest()[:16]
    return cache_dir() / f"gates-{key}.so"


def _build(cc: str, flags: tuple) -> Path:
    """Compile and link into the cache unless already there; raise on failure."""
    target = _library_path(cc, flags)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    compile_flags, link_flags = flags
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        objects = [str(Path(tmp) / f"{source.stem}.o") for source in SOURCES]
        lib = Path(tmp) / "gates.so"
        commands = [
            [cc, *compile_flags, "-fPIC", "-c", str(source), "-o", obj]
            for source, obj in zip(SOURCES, objects, strict=True)
        ]
        commands.append([cc, "-shared", *objects, "-o", str(lib), *link_flags])
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(lib, target)  # atomic: a concurrent process sees all or nothing
    return target


# Entry point -> argument types after (batch, hidden): every array as an address, the
# Elman RNN's nonlinearity switch (1 for relu) as an int.
_ADDRESS = ctypes.c_void_p
SIGNATURES = {
    "lstm_forward": [_ADDRESS] * 15,
    "lstm_backward": [_ADDRESS] * 18,
    "gru_forward": [_ADDRESS] * 11,
    "gru_backward": [_ADDRESS] * 14,
    "rnn_forward": [ctypes.c_int] + [_ADDRESS] * 9,
    "rnn_backward": [ctypes.c_int] + [_ADDRESS] * 9,
}


_SIZE = ctypes.c_long
# Leading arguments of the loops over time: (steps, batch, hidden, reverse), and for the
# Elman RNN (steps, batch, hidden, relu, reverse).
_LOOP = [_SIZE] * 3 + [ctypes.c_int]
_RNN_LOOP = [_SIZE] * 3 + [ctypes.c_int] * 2


def _set(function, argtypes: list, restype=None) -> None:
    function.argtypes, function.restype = argtypes, restype


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Argument types of every entry point: the gate steps, the tiles, the MKL loops and the
    dropout mask (sizes as long)."""
    for name, arguments in SIGNATURES.items():  # the gate steps, in float32 and float64
        for suffix in ("f32", "f64"):
            _set(getattr(lib, f"{name}_{suffix}"), [_SIZE, _SIZE, *arguments])
    _declare_tiles(lib)
    _declare_mkl_loops(lib)
    dropout = [_SIZE, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, _ADDRESS, _ADDRESS]
    for name in ("dropout_f32", "dropout_bf16"):  # n, seed, threshold, scale, x, out
        _set(getattr(lib, name), dropout)
    _set(lib.denormals_off, [], ctypes.c_uint)
    _set(lib.denormals_restore, [ctypes.c_uint])
    return lib


def _declare_tiles(lib: ctypes.CDLL) -> None:
    """tiles.c: the bfloat16 tile product (m, n, k, a, lda, packed, c, ldc), its packing, the
    weight gradients of mixed precision, and the loops over time on tiles."""
    size = _SIZE
    _set(lib.bf16_tiles_ready, [], ctypes.c_int)
    _set(lib.bf16_tile_threads, [size], ctypes.c_int)
    product = [size] * 3 + [_ADDRESS, size, _ADDRESS, _ADDRESS, size]
    _set(lib.bf16_tile_product, product)
    _set(lib.bf16_tile_product_rows, product + [_ADDRESS])  # bias
    _set(lib.bf16_tile_product_rows_f32, product + [_ADDRESS])
    _set(lib.bf16_pack_tiles, [size] * 2 + [_ADDRESS] + [size] * 2 + [_ADDRESS])
    # k, m, then for x (d, ldd, d_t, n, rows, ld, x_f32, packed, out) and for h the same
    # without x_f32
    h_source = [_ADDRESS, size, _ADDRESS, size, _ADDRESS, size, _ADDRESS, _ADDRESS]
    x_source = h_source[:6] + [ctypes.c_int] + h_source[6:]
    _set(lib.bf16_weight_grads, [size] * 2 + x_source + h_source)
    _set(lib.rnn_forward_tiles, _RNN_LOOP + [_ADDRESS] * 7)
    _set(lib.rnn_backward_tiles, _RNN_LOOP + [_ADDRESS] * 9)
    _set(lib.gru_forward_tiles, _LOOP + [_ADDRESS] * 9)
    _set(lib.gru_backward_tiles, _LOOP + [_ADDRESS] * 14)
    _set(lib.lstm_forward_tiles, _LOOP + [_ADDRESS] * 12)
    _set(lib.lstm_backward_tiles, _LOOP + [_ADDRESS] * 18)


def _declare_mkl_loops(lib: ctypes.CDLL) -> None:
    """mkl_loops.c: the float32 loops over time with MKL's packed products, whose addresses
    are handed over once (:func:`rnnkit.kernels.hardware.mkl_products`)."""
    _set(lib.mkl_products_use, [_ADDRESS] * 3)
    _set(lib.mkl_packed_bytes, [_SIZE] * 3, _SIZE)
    _set(lib.lstm_forward_mkl, _LOOP + [_ADDRESS] * 13)
    _set(lib.lstm_backward_mkl, _LOOP + [_ADDRESS] * 18)
    _set(lib.gru_forward_mkl, _LOOP + [_ADDRESS] * 10)
    _set(lib.gru_backward_mkl, _LOOP + [_ADDRESS] * 13)
    _set(lib.rnn_forward_mkl, _RNN_LOOP + [_ADDRESS] * 8)
    _set(lib.rnn_backward_mkl, _RNN_LOOP + [_ADDRESS] * 9)


def library() -> ctypes.CDLL | None:
    """The loaded gate library, built at first use; None (with one warning) if it cannot be."""
    cc = compiler()
    if cc in _cache:
        return _cache[cc]
    errors = []
    for flags in FLAG_SETS:
        try:
            _cache[cc] = _declare(ctypes.CDLL(str(_build(cc, flags))))
            return _cache[cc]
        except (OSError, subprocess.SubprocessError, AttributeError) as error:
            detail = getattr(error, "stderr", b"") or b""
            errors.append(f"{' '.join(flags[0])}: {error} {detail.decode(errors='replace')}")
    _cache[cc] = None
    warnings.warn(
        "rnnkit could not build its C gate kernels, so each fused path (LSTM, GRU, RNN) "
        "falls back to the Python BPTT (slower, same results):\n" + "\n".join(errors),
        RuntimeWarning,
        stacklevel=2,
    )
    return None
