"""rnnkit.training.heap: with keep_freed_blocks a freed large tensor stays in the process for reuse;
with glibc's defaults it goes back to the system. Each case runs in a fresh process, since
the setting and the heap it shapes are the whole process's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnnkit.training import heap

pytestmark = pytest.mark.skipif(
    heap.libc() is None or not Path("/proc/self/status").exists(), reason="needs glibc on Linux"
)
MB = 1024 * 1024

PROBE = """
import json, sys
import torch
from rnnkit.training import heap
from rnnkit.tools import peak_memory

def rss():
    return peak_memory._status_kb("VmRSS") * 1024

def cycle(megabytes=64):  # (grown while the tensor lives, left after it is freed)
    before = rss()
    block = torch.ones(megabytes * 1024 * 1024 // 4)
    grown = rss() - before
    del block
    return grown, rss() - before

mode = sys.argv[1]
took = heap.keep_freed_blocks() if mode != "default" else None
result = {"took": took, "first": cycle(), "again": [cycle() for _ in range(3)]}
if mode == "measured":
    with peak_memory.freed_memory_returned():
        result["inside"] = [heap.keeping, cycle(256)]  # larger than any kept block
result["keeping"] = heap.keeping
print(json.dumps(result))
"""


def probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_glibc_default_returns_a_freed_block():
    result = probe("default")
    grown, left = result["first"]
    assert grown > 60 * MB and left < 8 * MB
    assert result["keeping"] is False


def test_kept_block_stays_and_is_reused():
    result = probe("keep")
    assert result["took"] is True and result["keeping"] is True
    grown, left = result["first"]
    assert grown > 60 * MB and left > 60 * MB  # resident after the free
    # glibc may place one more block beside the first (at the second or third tensor);
    # from then on the kept blocks serve every new one, and the process grows no more
    assert sum(grown for grown, _ in result["again"]) < 72 * MB
    grown, left = result["again"][-1]
    assert grown < 8 * MB and left < 8 * MB


def test_peak_measurement_returns_blocks_then_keeps_again():
    result = probe("measured")
    keeping_inside, (grown, left) = result["inside"]
    assert keeping_inside is False
    assert grown > 250 * MB and left < 8 * MB
    assert result["keeping"] is True
