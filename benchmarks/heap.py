"""A charlm training step with glibc keeping freed blocks (rnnkit.training.heap) against glibc's
defaults, in one process, in alternating blocks of steps so that load drift hits both.

    PYTHONPATH=src python benchmarks/heap.py                 # the charlm defaults
    PYTHONPATH=src python benchmarks/heap.py '{"one_hot": false}' --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from charlm_race import variant_trainer  # benchmarks/, beside this script

from rnnkit.training import heap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="?", default="{}", help="charlm.Config fields, JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks of each mode")
    parser.add_argument("--steps", type=int, default=15, help="steps per block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = {"kept": heap.keep_freed_blocks, "glibc default": heap.return_freed_blocks}
    seconds = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as tmp:
        trainer, *_ = variant_trainer(json.loads(args.settings), 600, tmp)
        for _ in range(10):  # warm-up: lazy builds, first allocations
            trainer.train_step()
        for _ in range(args.blocks):
            for name, switch in modes.items():
                switch()
                trainer.train_step()  # the first step under the new setting is not timed
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                seconds[name].append((time.perf_counter() - start) / args.steps)
    for name, values in seconds.items():
        print(f"{name}: {statistics.median(values) * 1e3:.0f} ms per step (median of "
              f"{args.blocks} blocks of {args.steps})")  # fmt: skip
    ratio = statistics.median(seconds["glibc default"]) / statistics.median(seconds["kept"])
    print(f"kept is {ratio:.2f}x as fast")


if __name__ == "__main__":
    main()
