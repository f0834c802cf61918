"""glibc's heap, tuned for training: freed blocks are kept for the next step to reuse.

By default glibc serves every block above its mmap threshold (128 kB, growing to 32 MB) with
a fresh ``mmap`` and hands it back to the system when it is freed, and trims the top of the
heap as soon as 128 kB there are free. A training step frees and re-allocates the same
large activations every time (a (T, B, 4H) float32 gate buffer at T = 1024, B = 32, H = 256
is 128 MB), so each step faults every page of them in again and the kernel zeroes each
page first: in ``rnnkit bench``'s length sweep that cost grows with the sequence and made
a token at length 1024 cost 1.14x to 1.24x one at length 64 (docs/benchmarks.md).
:func:`keep_freed_blocks` turns both off, as the caching allocators of tcmalloc, jemalloc and
torch's own CUDA allocator do: the process keeps its peak memory and reuses it. It is a
no-op where the C library is not glibc. The setting is the whole process's, so only the
command's entry points (``rnnkit train``, ``rnnkit bench``, ``make demo``) turn it on; a
program that trains through :class:`rnnkit.training.trainer.Trainer` calls it if it wants it.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h) and its defaults
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_MMAP_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # the trim threshold: as mmap's
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only above 2 GB free at the top
keeping = False  # whether keep_freed_blocks is in force


def libc():
    """glibc through ctypes, or None on another C library."""
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.mallopt  # noqa: B018 (musl's libc.so.6 shim has no mallopt)
    except (OSError, AttributeError):
        return None
    return lib


def keep_freed_blocks() -> bool:
    """Serve large blocks from the heap and keep freed memory there; True if it took effect."""
    global keeping
    lib = libc()
    if lib is None:
        return False
    keeping = bool(lib.mallopt(M_MMAP_MAX, 0)) and bool(
        lib.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    )
    return keeping


def return_freed_blocks(threshold: int = DEFAULT_MMAP_THRESHOLD) -> None:
    """glibc's defaults again, except that the mmap threshold is fixed at ``threshold`` (it
    otherwise grows); the trim threshold goes with it."""
    global keeping
    keeping = False
    lib = libc()
    if lib is not None:
        lib.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        lib.mallopt(M_MMAP_THRESHOLD, threshold)
        lib.mallopt(M_TRIM_THRESHOLD, threshold)
