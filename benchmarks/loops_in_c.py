"""The float32 fused paths with their loops over time in C (MKL's per-step products called
from C, csrc/mkl_loops.c) against the same paths with the loops in Python (the twin), and
the largest float32 matrix products this machine runs, for scale.

Each round times one training step of every case in turn, so that load drift hits all;
the table shows medians. The matrix products are medians of 7 calls of torch.mm (MKL) and
numpy.matmul (OpenBLAS) on a few large shapes.

    PYTHONPATH=src python benchmarks/loops_in_c.py
    PYTHONPATH=src python benchmarks/loops_in_c.py --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy
import torch

from rnnkit.kernels import gru_fused, lstm_fused, rnn_fused
from rnnkit.tools import bench
from rnnkit.training import heap

SIZES = ((32, 100, 128), (64, 128, 256), (64, 128, 512))  # (B, T, H), input size = H
CELLS = {"lstm": lstm_fused, "peephole": lstm_fused, "gru": gru_fused, "rnn_tanh": rnn_fused}
SHAPES = ((2048, 2048, 2048), (4096, 1024, 4096), (8192, 512, 2048))  # (M, K, N)


def step_time(layer, x, grad) -> float:
    for p in layer.parameters():
        p.grad = None
    start = time.perf_counter()
    output, _ = layer(x)
    output.backward(grad)
    return time.perf_counter() - start


def loops(rounds: int) -> None:
    print("| cell | (B, T, H) | loops in C, ms | loops in Python, ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    for batch, steps, hidden in SIZES:
        x, grad = torch.randn(steps, batch, hidden), torch.randn(steps, batch, hidden)
        layers = {cell: bench.make_layer(cell, hidden, kernel="fused") for cell in CELLS}
        times = {(cell, in_c): [] for cell in CELLS for in_c in (True, False)}
        for round_ in range(rounds + 1):  # round 0 warms up
            for cell, module in CELLS.items():
                for in_c in (True, False):
                    module.LOOPS_IN_C = in_c
                    seconds = step_time(layers[cell], x, grad)
                    if round_:
                        times[cell, in_c].append(seconds)
        for cell, module in CELLS.items():
            module.LOOPS_IN_C = True
            c, py = (statistics.median(times[cell, in_c]) * 1e3 for in_c in (True, False))
            print(f"| {cell} | {(batch, steps, hidden)} | {c:.1f} | {py:.1f} | {py / c:.2f}x |")


def products() -> None:
    print("\n| (M, K, N) | torch.mm (MKL) GFLOP/s | numpy.matmul (OpenBLAS) GFLOP/s |")
    print("|---|---:|---:|")
    for m, k, n in SHAPES:
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        rates = [
            2 * m * k * n / median_seconds(call, a, b, out) / 1e9
            for call in (mkl_product, openblas_product)
        ]
        print(f"| {(m, k, n)} | {rates[0]:.0f} | {rates[1]:.0f} |")


def mkl_product(a, b, out):
    torch.mm(a, b, out=out)


def openblas_product(a, b, out):
    numpy.matmul(a.numpy(), b.numpy(), out=out.numpy())


def median_seconds(call, *args, repeats: int = 7) -> float:
    call(*args)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed steps of each case")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heap.keep_freed_blocks()  # as the trainer and rnnkit bench do
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds")
    loops(args.rounds)
    products()


if __name__ == "__main__":
    main()
