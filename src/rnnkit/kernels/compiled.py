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


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Argument types of every entry point, in float32 and float64: sizes as long; and of
    the bfloat16 tile product (m, n, k, a, lda, packed, c, ldc) of ``rnn_gates.c`` and the
    loops over time on tiles of the RNN, the GRU and the LSTM."""
    for name, arguments in SIGNATURES.items():
        for suffix in ("f32", "f64"):
            function = getattr(lib, f"{name}_{suffix}")
            function.argtypes = [ctypes.c_long, ctypes.c_long, *arguments]
            function.restype = None
    size = ctypes.c_long
    lib.bf16_tiles_ready.argtypes, lib.bf16_tiles_ready.restype = [], ctypes.c_int
    lib.bf16_tile_threads.argtypes, lib.bf16_tile_threads.restype = [size], ctypes.c_int
    lib.bf16_tile_product.argtypes = [size] * 3 + [_ADDRESS, size, _ADDRESS, _ADDRESS, size]
    lib.bf16_tile_product.restype = None
    lib.bf16_tile_product_rows.argtypes = lib.bf16_tile_product.argtypes + [_ADDRESS]  # bias
    lib.bf16_tile_product_rows.restype = None
    lib.bf16_pack_tiles.argtypes = [size] * 2 + [_ADDRESS] + [size] * 2 + [_ADDRESS]
    lib.bf16_pack_tiles.restype = None
    # tiles.c: k, m, then for x (d, ldd, d_t, n, rows, ld, x_f32, packed, out) and for h
    # the same without x_f32
    h_source = [_ADDRESS, size, _ADDRESS, size, _ADDRESS, size, _ADDRESS, _ADDRESS]
    x_source = h_source[:6] + [ctypes.c_int] + h_source[6:]
    lib.bf16_weight_grads.argtypes = [size] * 2 + x_source + h_source
    lib.bf16_weight_grads.restype = None
    lib.bf16_tile_product_rows_f32.argtypes = lib.bf16_tile_product_rows.argtypes
    lib.bf16_tile_product_rows_f32.restype = None
    flags = [size] * 3 + [ctypes.c_int] * 2  # steps, batch, hidden, relu, reverse
    lib.rnn_forward_tiles.argtypes, lib.rnn_forward_tiles.restype = flags + [_ADDRESS] * 7, None
    lib.rnn_backward_tiles.argtypes, lib.rnn_backward_tiles.restype = flags + [_ADDRESS] * 9, None
    flags = [size] * 3 + [ctypes.c_int]  # steps, batch, hidden, reverse
    lib.gru_forward_tiles.argtypes, lib.gru_forward_tiles.restype = flags + [_ADDRESS] * 9, None
    lib.gru_backward_tiles.argtypes = flags + [_ADDRESS] * 14
    lib.gru_backward_tiles.restype = None
    lib.lstm_forward_tiles.argtypes = flags + [_ADDRESS] * 12
    lib.lstm_forward_tiles.restype = None
    lib.lstm_backward_tiles.argtypes = flags + [_ADDRESS] * 18
    lib.lstm_backward_tiles.restype = None
    dropout = [size, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, _ADDRESS, _ADDRESS]
    for name in ("dropout_f32", "dropout_bf16"):  # n, seed, threshold, scale, x, out
        getattr(lib, name).argtypes, getattr(lib, name).restype = dropout, None
    lib.mkl_products_use.argtypes, lib.mkl_products_use.restype = [_ADDRESS] * 3, None
    lib.mkl_packed_bytes.argtypes, lib.mkl_packed_bytes.restype = [size] * 3, size
    lib.lstm_forward_mkl.argtypes = flags + [_ADDRESS] * 13
    lib.lstm_forward_mkl.restype = None
    lib.lstm_backward_mkl.argtypes = flags + [_ADDRESS] * 18
    lib.lstm_backward_mkl.restype = None
    lib.gru_forward_mkl.argtypes, lib.gru_forward_mkl.restype = flags + [_ADDRESS] * 10, None
    lib.gru_backward_mkl.argtypes = flags + [_ADDRESS] * 13
    lib.gru_backward_mkl.restype = None
    flags = [size] * 3 + [ctypes.c_int] * 2  # steps, batch, hidden, relu, reverse
    lib.rnn_forward_mkl.argtypes, lib.rnn_forward_mkl.restype = flags + [_ADDRESS] * 8, None
    lib.rnn_backward_mkl.argtypes, lib.rnn_backward_mkl.restype = flags + [_ADDRESS] * 9, None
    lib.denormals_off.argtypes, lib.denormals_off.restype = [], ctypes.c_uint
    lib.denormals_restore.argtypes, lib.denormals_restore.restype = [ctypes.c_uint], None
    return lib


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
