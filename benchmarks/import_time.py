"""What ``import rnnkit`` costs beyond ``import torch``, in fresh interpreters.

    python benchmarks/import_time.py [--runs 15]

Each run starts two new interpreters: one imports torch alone, the other torch and then
rnnkit, and each times its own imports. The table gives the median and the spread of the
difference (rnnkit's share; the target is under 0.3 s) and the modules ``import rnnkit``
adds, so a heavy import that creeps in shows by name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
start = time.perf_counter()
import torch
torch_done = time.perf_counter()
before = set(sys.modules)
{extra}
print(json.dumps({{"torch": torch_done - start, "after": time.perf_counter() - torch_done,
                   "added": sorted(set(sys.modules) - before)}}))
"""


def timed(extra: str) -> dict:
    code = PROBE.format(extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    shares, added = [], []
    for _ in range(args.runs):
        alone, with_rnnkit = timed("pass"), timed("import rnnkit")
        shares.append(with_rnnkit["after"] - alone["after"])
        added = with_rnnkit["added"]
    quartiles = statistics.quantiles(shares, n=4)
    print(f"import rnnkit beyond import torch, {args.runs} runs:")
    print(
        f"  median {statistics.median(shares) * 1000:.0f} ms, quartiles {quartiles[0] * 1000:.0f}"
        f" to {quartiles[2] * 1000:.0f} ms, max {max(shares) * 1000:.0f} ms"
    )
    heavy = [m for m in added if m.split(".")[0] in ("matplotlib", "sklearn", "scipy", "PIL")]
    ours = [m for m in added if m.startswith("rnnkit")]
    print(f"  modules added: {len(added)} ({len(ours)} of rnnkit's); heavy ones: {heavy or 'none'}")


if __name__ == "__main__":
    main()
