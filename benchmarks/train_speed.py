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

import rnnkit

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
    """name -> (model, peer name or None, gate blocks)."""
    table = {
        "torch.nn.LSTM": (make("torch.LSTM", hidden), None, 4),
        "peephole fused": (make("peephole", hidden, kernel="fused"), "torch.nn.LSTM", 4),
        "peephole loop": (make("peephole", hidden, kernel="loop"), None, 4),
        "peephole bptt (python)": (make("peephole", hidden, kernel="bptt"), None, 4),
        "peephole fused bf16": (
            make("peephole", hidden, kernel="fused", precision="bf16"),
            "peephole fused",
            4,
        ),
        "lstm fused": (make("lstm", hidden, kernel="fused"), "torch.nn.LSTM", 4),
        "lstm auto": (make("lstm", hidden), "torch.nn.LSTM", 4),
        "lstm auto bf16": (make("lstm", hidden, precision="bf16"), "lstm auto", 4),
        "lstm fused bf16": (make("lstm", hidden, kernel="fused", precision="bf16"), "lstm auto", 4),
        "torch.nn.GRU": (make("torch.GRU", hidden), None, 3),
        "gru auto": (make("gru", hidden), "torch.nn.GRU", 3),
        "gru auto bf16": (make("gru", hidden, precision="bf16"), "gru auto", 3),
        "torch.nn.RNN": (make("torch.RNN", hidden), None, 1),
        "rnn auto": (make("rnn", hidden), "torch.nn.RNN", 1),
        "rnn auto bf16": (make("rnn", hidden, precision="bf16"), "rnn auto", 1),
    }
    table["peephole loop"] = (table["peephole loop"][0], "peephole fused", 4)
    return table


def train_step(model, x: torch.Tensor, weights: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    output, _ = model(x)
    (output.float() * weights).sum().backward()


def measure(batch: int, length: int, hidden: int, rounds: int, only: list[str]) -> list[dict]:
    torch.manual_seed(0)
    table = {k: v for k, v in cases(hidden).items() if not only or any(o in k for o in only)}
    x = torch.randn(length, batch, hidden)  # (T, B, I)
    weights = torch.randn(length, batch, hidden)  # a loss that weighs every output
    times = {name: [] for name in table}
    for model, _, _ in table.values():
        train_step(model, x, weights)  # warm-up: allocations, the C build, oneDNN primitives
    for _ in range(rounds):
        for name, (model, _, _) in table.items():
            start = clock()
            train_step(model, x, weights)
            times[name].append(clock() - start)
    rows = []
    for name, (_, peer, gates) in table.items():
        seconds = statistics.median(times[name])
        flops = 3 * 2 * length * batch * gates * hidden * (2 * hidden)
        rows.append(
            {
                "size": f"({batch}, {length}, {hidden})",
                "case": name,
                "ms": seconds * 1e3,
                "tokens/s": batch * length / seconds,
                "GFLOP/s": flops / seconds / 1e9,
                "peer": peer,
                "ratio": statistics.median(times[peer]) / seconds if peer in times else None,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    print("| size (B, T, H) | case | ms / step | tokens/s | GFLOP/s | peer | speed vs peer |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else ""
        print(
            f"| {r['size']} | {r['case']} | {r['ms']:.1f} | {r['tokens/s']:,.0f} | "
            f"{r['GFLOP/s']:.0f} | {r['peer'] or ''} | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size, three rounds")
    parser.add_argument("--rounds", type=int, default=7, help="repeats of every case")
    parser.add_argument("--only", nargs="*", default=[], help="cases whose name contains one")
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
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sizes, rounds = (SIZES[:1], 3) if args.quick else (SIZES, args.rounds)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds, "
        f"{args.clock} clock"
    )
    rows = []
    for batch, length, hidden in sizes:
        rows += measure(batch, length, hidden, rounds, args.only)
    print_table(rows)


if __name__ == "__main__":
    main()
