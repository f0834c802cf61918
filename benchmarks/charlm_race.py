"""Race charlm settings against each other and the plain script, on one clock each.

Each variant is a JSON object of ``charlm.Config`` fields over the defaults; all train in
one process on one corpus (``--data``: a name of ``charlm_corpora.GRID`` or any corpus
spec, ``shakespeare`` unless given), taking turns step by step, each counting only
its own main thread's CPU time (``--clock thread``, the default, for one thread on a shared
machine) or its own steps' wall-clock time (``--clock wall``, for several threads on a quiet
one), so the variants and the plain script of ``benchmarks/charlm.py`` share whatever load
the machine has. Each is scored on the whole validation split at a third, two thirds and
all of the budget (its cosine schedule ends there). This is how the charlm defaults were
chosen (docs/benchmarks.md).

    PYTHONPATH=src python benchmarks/charlm_race.py 90 '{}' '{"cell": "gru"}' --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import tempfile
import time

import torch
from charlm import plain_trainer, race  # benchmarks/, beside this script
from charlm_corpora import corpus_spec

from rnnkit.tasks import charlm
from rnnkit.training import heap
from rnnkit.training.trainer import Progress, Trainer


def variant_trainer(settings: dict, seconds: float, run_dir: str, data: str):
    config = dataclasses.replace(
        charlm.Config(),
        data=data,
        minutes=seconds / 60,
        eval_every=10**9,
        out=run_dir,
        **settings,
    )
    vocab, streams, val_ids = charlm.prepare(config)
    trainer = Trainer(
        config, charlm.build_task(config, vocab, streams, val_ids), run_dir, Progress(io.StringIO())
    )
    return trainer, vocab, streams, val_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float, help="training time of each")
    parser.add_argument("variants", nargs="+", help="JSON objects of charlm.Config fields")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data", default="shakespeare", help="a grid name or a corpus spec")
    parser.add_argument(
        "--clock",
        choices=["thread", "wall"],
        default="thread",
        help="thread: main-thread CPU time, steady on a shared machine (one thread); wall: "
        "wall-clock time of each model's own steps, for several threads on a quiet machine",
    )
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help="leave the plain script out (to explore; a table compares with it side by side)",
    )
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    print(
        f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
        f"{args.threads} threads, {args.clock} clock, corpus {args.data}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainers, data = {}, corpus_spec(args.data, tmp)
        for i, text in enumerate(args.variants):
            trainer, vocab, streams, val_ids = variant_trainer(
                json.loads(text), args.seconds, f"{tmp}/{i}", data
            )
            trainers[text] = trainer
        train_ids = torch.cat([streams.inputs.reshape(-1), streams.targets[-1, -1:]])
        if not args.no_plain:
            trainers["plain"] = plain_trainer(vocab, train_ids, args.seconds, f"{tmp}/plain")
        for trainer in trainers.values():
            trainer.clock = time.thread_time if args.clock == "thread" else time.perf_counter
        marks = [args.seconds / 3, args.seconds * 2 / 3, args.seconds]
        rows = race(trainers, val_ids, marks)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for r in sorted(rows, key=lambda r: (r["mark"], r["val_loss"])):
        print(f"{r['mark']:>6g} s  {r['val_loss']:.3f}  step {r['step']:>5}  {r['model']}")


if __name__ == "__main__":
    main()
