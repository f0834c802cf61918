"""bf16 training steps with the weight gradients on AMX tiles (csrc/tiles.c) against the
same steps with them in oneDNN's bfloat16 product (their twin), and the two alone.

Each round times one training step of every case in turn, so that load drift hits all;
the tables show medians. The second table times the weight gradients of one layer alone:
d^T x and d^T h over all T x B rows, as a (32, 100, 128) RNN and a (64, 128, 256) LSTM have
them.

    PYTHONPATH=src python benchmarks/weight_grads.py
    PYTHONPATH=src python benchmarks/weight_grads.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnnkit.kernels import common
from rnnkit.tools import bench
from rnnkit.training import heap

SIZES = ((32, 100, 128), (64, 128, 256), (64, 128, 512))  # (B, T, H), input size = H
CELLS = ("rnn_tanh", "lstm", "gru", "peephole")
ON_TILES = common.weight_grads_on_tiles


def timed(step, tiles: bool) -> float:
    common.weight_grads_on_tiles = ON_TILES if tiles else (lambda *a: False)
    try:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start
    finally:
        common.weight_grads_on_tiles = ON_TILES


def steps(rounds: int) -> None:
    print("| cell | (B, T, H) | tiles, ms | oneDNN, ms | speed-up of the step |")
    print("|---|---|---:|---:|---:|")
    for batch, length, hidden in SIZES:
        x = torch.randn(length, batch, hidden)  # (T, B, H)
        for cell in CELLS:
            step = bench.training_step(bench.make_layer(cell, hidden, precision="bf16"), x)
            for tiles in (True, False, True, False):  # warm-up
                timed(step, tiles)
            times = {True: [], False: []}
            for _ in range(rounds):
                for tiles in (True, False):
                    times[tiles].append(timed(step, tiles))
            ours, theirs = (statistics.median(times[t]) * 1e3 for t in (True, False))
            size = (batch, length, hidden)
            print(f"| {cell} | {size} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x |")


def alone(rounds: int) -> None:
    print("\n| (TB, GH, N) | tiles, us | oneDNN, us | speed-up |")
    print("|---|---:|---:|---:|")
    for rows, gates, n in ((3200, 128, 128), (8192, 1024, 256)):
        torch.manual_seed(0)
        d = torch.randn(rows, gates).bfloat16()
        x, h = torch.randn(rows, n).bfloat16(), torch.randn(rows, n).bfloat16()
        cases = {
            "tiles": lambda d=d, x=x, h=h: common.tile_weight_grads(d, x, h),
            "oneDNN": lambda d=d, x=x, h=h: (
                torch.mm(d.t(), x).float(),
                torch.mm(d.t(), h).float(),
            ),
        }
        times = {name: [] for name in cases}
        for _ in range(2):
            for case in cases.values():
                case()
        for _ in range(rounds * 4):
            for name, case in cases.items():
                start = time.perf_counter()
                case()
                times[name].append(time.perf_counter() - start)
        ours, theirs = (statistics.median(times[k]) * 1e6 for k in cases)
        print(f"| {(rows, gates, n)} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per case")
    args = parser.parse_args()
    if not common.tiles_run(16, 16, 32):
        raise SystemExit("no AMX-BF16 tiles here: the weight gradients run in oneDNN anyway")
    heap.keep_freed_blocks()
    steps(args.rounds)
    alone(args.rounds)


if __name__ == "__main__":
    main()
