"""What adding the bias in the float32 C loops saves, against adding it in the projection.

The fused float32 LSTM used to compute its input projection as ``addmm(b, x, W_ih^T)``: torch
first copies the bias into every row of the (T x B, 4H) result, then MKL adds the product
to it. Since the loop over time reads each row once anyway (``csrc/mkl_loops.c``), it now
adds the bias there, in the pass that adds W_hh h_{t-1}, and the projection is a plain mm.
This script times both halves of each way side by side in one process (medians of rounds
in which every case runs once in turn): the projection (addmm against mm) and the C forward
loop without and with its bias.

    PYTHONPATH=src python benchmarks/bias_in_loop.py
    PYTHONPATH=src python benchmarks/bias_in_loop.py --rounds 25
"""

from __future__ import annotations

import argparse

import torch

from rnnkit.kernels.common import mkl_products
from rnnkit.kernels.compiled import library
from rnnkit.kernels.lstm_fused import mkl_scratch
from rnnkit.tools import timing
from rnnkit.training import heap

SIZES = ((128, 64, 256), (32, 32, 256), (128, 64, 512))  # (T, B, H), input size = H


def cases(steps: int, batch: int, hidden: int) -> dict:
    """{name: function} for one size: the two projections and the loop without and with b."""
    x = torch.randn(steps * batch, hidden)  # (TB, I)
    weight_ih = torch.randn(4 * hidden, hidden) * 0.05
    weight_hh = torch.randn(4 * hidden, hidden) * 0.05
    bias = torch.randn(4 * hidden)
    gates = torch.randn(steps, batch, 4 * hidden)  # rewritten by every loop: values irrelevant
    h_prev_seq, c_prev_seq = torch.zeros(2, steps + 1, batch, hidden)
    c_new_seq, output = torch.empty(2, steps, batch, hidden)
    packed, scratch = mkl_scratch(batch, 4 * hidden, hidden), torch.empty(batch, 4 * hidden)

    def loop(b):
        def run():
            library().lstm_forward_mkl(
                steps=steps, batch=batch, hidden=hidden, reverse=0, kept=1, gates=gates, bias=b,
                w_hh=weight_hh, packed=packed, rec=scratch, h_prev_seq=h_prev_seq,
                c_prev_seq=c_prev_seq, c_new_seq=c_new_seq, p_i=None, p_f=None, p_o=None,
                mask=None, out=output,
            )  # fmt: skip

        return run

    return {
        "addmm": lambda: torch.addmm(bias, x, weight_ih.t()),
        "mm": lambda: torch.mm(x, weight_ih.t()),
        "loop": loop(None),
        "loop + bias": loop(bias),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if library() is None or not mkl_products():
        raise SystemExit("needs the C library and MKL's packed products reachable from C")
    heap.keep_freed_blocks()
    print("| T | B | H | addmm ms | mm ms | loop ms | loop + bias ms | saved ms | saved |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for steps, batch, hidden in SIZES:
        calls = max(1, 16384 // (steps * batch))  # each timing covers at least 16k tokens
        functions = cases(steps, batch, hidden)
        functions = {name: timing.times(f, calls) for name, f in functions.items()}
        ms = {k: v / calls * 1e3 for k, v in timing.side_by_side(functions, args.rounds).items()}
        before, after = ms["addmm"] + ms["loop"], ms["mm"] + ms["loop + bias"]
        print(
            f"| {steps} | {batch} | {hidden} | {ms['addmm']:.2f} | {ms['mm']:.2f} | "
            f"{ms['loop']:.2f} | {ms['loop + bias']:.2f} | {before - after:.2f} | "
            f"{(before - after) / before:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
