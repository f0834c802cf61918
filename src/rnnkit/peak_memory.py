"""Peak resident memory of one step, as Linux counts it, for ``rnnkit bench``.

The peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs before the step, and
glibc is told to return freed blocks to the system, so the figure is what the step itself
adds at its peak, not what earlier steps left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def supported() -> bool:
    return Path("/proc/self/clear_refs").exists()


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def freed_memory_returned():
    """Fix glibc's mmap threshold (it otherwise grows), so that freed tensors leave the RSS."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024)
    try:
        yield
    finally:
        if libc is not None:  # glibc's defaults (without the growth of the threshold)
            libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
            libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)


def peak_rss(step) -> int:
    """Bytes of resident memory the step adds at its peak."""
    step()  # warm-up, so that lazily built state is not counted
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)  # hand freed memory back, so the step must fault it in anew
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    return max(0, _status_kb("VmHWM") - before) * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")
