"""Timing functions fairly against each other, for ``rnnkit bench`` and the benchmarks.

Cases are timed side by side in one process, in turn, so that a change in the machine's load
hits every case alike, and the median of the repeats is kept. A step too short to time on
its own is repeated inside one timing (:func:`times`, :func:`repeated`).
"""

from __future__ import annotations

import statistics
import time

import torch


def side_by_side(functions: dict, repeats: int) -> dict:
    """Median seconds per call of each function, run in turn so that load drift hits all."""
    for function in functions.values():
        function()  # warm-up: first-call costs, caches, lazy builds
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def one_thread(loop):
    """``loop`` with torch on one thread (at batch 1 often faster than several)."""

    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            loop()
        finally:
            torch.set_num_threads(threads)

    return run


def times(step, count: int):
    """A function running ``step`` ``count`` times."""

    def run():
        for _ in range(count):
            step()

    return run


def repeated(step, seconds: float):
    """A function running ``step`` n times, n chosen so that one call lasts about ``seconds``;
    returned with n."""
    for _ in range(5):
        step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 10 or n < 3:
        step()
        n += 1
    count = max(3, round(n * 10))
    return times(step, count), count
