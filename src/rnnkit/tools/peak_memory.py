"""Peak resident memory of one step, as Linux counts it, for ``rnnkit bench``.

The peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs before the step, and
glibc is told to return freed blocks to the system, so the figure is what the step itself
adds at its peak, not what earlier steps left behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from rnnkit.training import heap

SMALL = 64 * 1024  # the mmap and trim thresholds while measuring


def supported() -> bool:
    return Path("/proc/self/clear_refs").exists()


@contextlib.contextmanager
def freed_memory_returned():
    """Fix glibc's mmap threshold low (it otherwise grows), so that freed tensors leave the
    RSS; afterwards glibc's defaults, or :func:`heap.keep_freed_blocks` if it was on."""
    kept = heap.keeping
    heap.return_freed_blocks(SMALL)
    try:
        yield
    finally:
        if kept:
            heap.keep_freed_blocks()
        else:
            heap.return_freed_blocks()


def peak_rss(step) -> int:
    """Bytes of resident memory the step adds at its peak."""
    step()  # warm-up, so that lazily built state is not counted
    lib = heap.libc()
    if lib is not None:
        lib.malloc_trim(0)  # hand freed memory back, so the step must fault it in anew
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    return max(0, _status_kb("VmHWM") - before) * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")
