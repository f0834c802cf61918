"""Training speed of rnnkit's layers against their peers, side by side in one process.

One training step is forward, a loss over the whole output, and backward into every weight.
Each round runs every case once in turn, so that a busy machine slows peers alike; the
table shows medians over the rounds and the ratio of each case's tokens/s to its peer's.

    python benchmarks/train_speed.py                 # the issue's three sizes
    python benchmarks/train_speed.py --quick         # the smallest size, three rounds

GFLOP/s counts the matrix products only: training does three times the forward's
2 T B G H (I + H) multiply-adds (G gate blocks), as the cost table of rnnkit.summary does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.training import heap

SIZES = [(32, 100, 128), (64, 128, 256), (64, 128, 512)]  # (batch, length, hidden)
clock = time.perf_counter  # or time.process_time (--clock cpu)


def make(name: str, hidden: int, **options):
    """A one-layer model with input size = hidden size: torch.nn's or rnnkit's."""
    if name.startswith("torch."):
        return getattr(torch.nn, name.removeprefix("torch."))(hidden, hidden)
    cls = {"lstm": rnnkit.LSTM, "peephole": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn": rnnkit.RNN}
    peephole = {"peephole": True} if name == "peephole" else {}
    return cls[name](hidden, hidden, **peephole, **options)


def cases(hidden: int) -> dict:
    """name -> (model, gate blocks, with lengths)."""
    return {
        "torch.nn.LSTM": (make("torch.LSTM", hidden), 4, False),
        "peephole fused": (make("peephole", hidden, kernel="fused"), 4, False),
        "peephole loop": (make("peephole", hidden, kernel="loop"), 4, False),
        "peephole bptt": (make("peephole", hidden, kernel="bptt"), 4, False),
        "peephole fused bf16": (make("peephole", hidden, precision="bf16"), 4, False),
        "lstm auto": (make("lstm", hidden), 4, False),
        "lstm fused": (make("lstm", hidden, kernel="fused"), 4, False),
        "lstm auto bf16": (make("lstm", hidden, precision="bf16"), 4, False),
        "lstm fused bf16": (make("lstm", hidden, kernel="fused", precision="bf16"), 4, False),
        "lstm torch bf16": (make("lstm", hidden, kernel="torch", precision="bf16"), 4, False),
        "torch.nn.LSTM, lengths": (make("torch.LSTM", hidden), 4, True),
        "lstm auto, lengths": (make("lstm", hidden), 4, True),
        "torch.nn.GRU": (make("torch.GRU", hidden), 3, False),
        "gru auto": (make("gru", hidden), 3, False),
        "gru fused": (make("gru", hidden, kernel="fused"), 3, False),
        "gru auto bf16": (make("gru", hidden, precision="bf16"), 3, False),
        "gru fused bf16": (make("gru", hidden, kernel="fused", precision="bf16"), 3, False),
        "gru torch bf16": (make("gru", hidden, kernel="torch", precision="bf16"), 3, False),
        "torch.nn.GRU, lengths": (make("torch.GRU", hidden), 3, True),
        "gru auto, lengths": (make("gru", hidden), 3, True),
        "torch.nn.RNN": (make("torch.RNN", hidden), 1, False),
        "rnn auto": (make("rnn", hidden), 1, False),
        "rnn fused": (make("rnn", hidden, kernel="fused"), 1, False),
        "rnn auto bf16": (make("rnn", hidden, precision="bf16"), 1, False),
        "rnn fused bf16": (make("rnn", hidden, kernel="fused", precision="bf16"), 1, False),
        "rnn torch bf16": (make("rnn", hidden, kernel="torch", precision="bf16"), 1, False),
        "torch.nn.RNN, lengths": (make("torch.RNN", hidden), 1, True),
        "rnn auto, lengths": (make("rnn", hidden), 1, True),
    }


# (case, peer, the target for case speed / peer speed, or None)
COMPARISONS = [
    ("peephole fused", "torch.nn.LSTM", 0.8),
    ("peephole fused", "peephole loop", 2.5),
    ("peephole fused", "peephole bptt", None),
    ("peephole fused bf16", "peephole fused", 1.8),
    ("lstm auto", "torch.nn.LSTM", 0.95),
    ("lstm fused", "torch.nn.LSTM", None),
    ("lstm auto bf16", "lstm auto", 1.8),
    ("lstm fused bf16", "lstm auto", None),
    ("lstm fused bf16", "lstm fused", None),
    ("lstm fused bf16", "lstm torch bf16", None),
    ("lstm auto, lengths", "torch.nn.LSTM, lengths", None),
    ("gru auto", "torch.nn.GRU", 0.95),
    ("gru fused", "gru auto", None),
    ("gru auto bf16", "gru auto", 1.8),
    ("gru fused bf16", "gru auto", None),
    ("gru fused bf16", "gru fused", None),
    ("gru fused bf16", "gru torch bf16", None),
    ("gru auto, lengths", "torch.nn.GRU, lengths", None),
    ("rnn auto", "torch.nn.RNN", 0.95),
    ("rnn fused", "rnn auto", None),
    ("rnn auto bf16", "rnn auto", 1.8),
    ("rnn fused bf16", "rnn auto", None),
    ("rnn fused bf16", "rnn fused", None),
    ("rnn fused bf16", "rnn torch bf16", None),
    ("rnn auto, lengths", "torch.nn.RNN, lengths", None),
]


def train_step(model, x: torch.Tensor, weights: torch.Tensor, lengths) -> None:
    model.zero_grad(set_to_none=True)
    if lengths is None:
        output, _ = model(x)
    elif isinstance(model, torch.nn.RNNBase):  # torch.nn takes lengths as a PackedSequence
        packed, _ = model(pack_padded_sequence(x, lengths, enforce_sorted=False))
        output, _ = pad_packed_sequence(packed, total_length=x.shape[0])
    else:
        output, _ = model(x, lengths=lengths)
    (output.float() * weights).sum().backward()


def measure(batch: int, length: int, hidden: int, rounds: int, only: list[str]) -> dict:
    """case name -> median seconds per training step."""
    torch.manual_seed(0)
    table = {k: v for k, v in cases(hidden).items() if not only or k in only}
    x = torch.randn(length, batch, hidden)  # (T, B, I)
    weights = torch.randn(length, batch, hidden)  # a loss that weighs every output
    lengths = torch.full((batch,), length)
    lengths[1::2] = length - length // 4  # half the batch a quarter shorter
    times = {name: [] for name in table}
    for model, _, with_lengths in table.values():  # warm-up: the C build, oneDNN primitives
        train_step(model, x, weights, lengths if with_lengths else None)
    for _ in range(rounds):
        for name, (model, _, with_lengths) in table.items():
            start = clock()
            train_step(model, x, weights, lengths if with_lengths else None)
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def print_tables(results: dict, sizes, hidden_gates: dict) -> None:
    print("| case | " + " | ".join(f"({b}, {t}, {h}) ms, tokens/s, GFLOP/s" for b, t, h in sizes))
    print("|---|" + "---:|" * len(sizes))
    for name, gates in hidden_gates.items():
        cells = []
        for b, t, h in sizes:
            seconds = results[(b, t, h)][name]
            flops = 3 * 2 * t * b * gates * h * (2 * h)
            cells.append(
                f"{seconds * 1e3:.0f}, {b * t / seconds:,.0f}, {flops / seconds / 1e9:.0f}"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| speed of | against | target | " + " | ".join(f"({b}, {t}, {h})" for b, t, h in sizes))
    print("|---|---|---:|" + "---:|" * len(sizes))
    for case, peer, target in COMPARISONS:
        if case not in hidden_gates or peer not in hidden_gates:
            continue
        ratios = [results[size][peer] / results[size][case] for size in sizes]
        marks = [
            f"{r:.2f}x" + ("" if target is None else (" ok" if r >= target else " no"))
            for r in ratios
        ]
        print(
            f"| {case} | {peer} | {'' if target is None else f'{target}x'} | "
            + " | ".join(marks)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size, three rounds")
    parser.add_argument("--rounds", type=int, default=7, help="repeats of every case")
    parser.add_argument("--only", nargs="*", default=[], help="case names to run (default: all)")
    parser.add_argument(
        "--sizes", nargs="*", default=[], help="batch,length,hidden triples (default: the three)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, steady on a shared machine (use with --threads 1)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    heap.keep_freed_blocks()  # as rnnkit's trainer does, for every case alike
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sizes, rounds = (SIZES[:1], 3) if args.quick else (SIZES, args.rounds)
    if args.sizes:
        sizes = [tuple(int(n) for n in size.split(",")) for size in args.sizes]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds, "
        f"{args.clock} clock"
    )
    results = {size: measure(*size, rounds, args.only) for size in sizes}
    gates = {name: g for name, (_, g, _) in cases(8).items() if name in results[sizes[0]]}
    print_tables(results, sizes, gates)


if __name__ == "__main__":
    main()
