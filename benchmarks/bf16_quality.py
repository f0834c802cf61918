"""bf16 against float32 on the same character model: validation loss after a fixed budget.

Issue #4's target 3 asks bf16 training to be at least 1.8x faster than float32 *and* to
leave the character model's validation loss after a fixed token budget within 1% of
float32's. The speed half is in ``train_speed.py`` and ``rnnkit bench``; this is the
quality half. For each cell, two runs of ``rnnkit train charlm`` on the ``shakespeare``
corpus from the same seed, the same data order and the same number of steps, one with
``precision="fp32"`` and one with ``precision="bf16"``, each scored on the same validation
characters at the end.

    PYTHONPATH=src python benchmarks/bf16_quality.py [--steps 300] [--cells lstm,gru,rnn,peephole]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import os
import tempfile

import torch

from rnnkit.tasks import charlm
from rnnkit.training import heap
from rnnkit.training.trainer import Progress, Trainer


def final_val_loss(cell: str, precision: str, steps: int, run_dir: str) -> tuple[float, int]:
    """Validation loss (nats per character) after ``steps`` steps, and the characters seen."""
    config = dataclasses.replace(
        charlm.Config(),
        data="shakespeare",
        cell=cell,
        hidden=256,
        batch_size=64,
        window=64,
        steps=steps,
        minutes=0,
        eval_every=steps,
        precision=precision,
        device="cpu",
        out=run_dir,
    )
    vocab, streams, val_ids = charlm.prepare(config)
    trainer = Trainer(
        config, charlm.build_task(config, vocab, streams, val_ids), run_dir, Progress(io.StringIO())
    )
    trainer.fit()
    return trainer.best, trainer.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of each run")
    parser.add_argument("--cells", default="lstm,gru,rnn,peephole", help="comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    start = datetime.datetime.now(datetime.UTC)
    print(f"start {start:%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}")
    print("| cell | float32 val loss | bf16 val loss | difference | within 1% | characters |")
    print("|---|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells.split(","):
            exact, chars = final_val_loss(cell, "fp32", args.steps, f"{tmp}/{cell}-fp32")
            mixed, _ = final_val_loss(cell, "bf16", args.steps, f"{tmp}/{cell}-bf16")
            change = mixed / exact - 1
            ok = "yes" if abs(change) <= 0.01 else "no"
            print(f"| {cell} | {exact:.4f} | {mixed:.4f} | {change:+.2%} | {ok} | {chars:,} |")
    print(f"end {datetime.datetime.now(datetime.UTC):%H:%M} UTC, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
