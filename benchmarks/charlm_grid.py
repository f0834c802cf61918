"""The charlm defaults against the plain script on every corpus of the grid, one budget.

For each corpus of ``charlm_corpora.GRID`` (or those named), ``rnnkit train charlm`` with
nothing but ``--data`` and ``--minutes`` races the plain torch.nn.LSTM script of
``benchmarks/charlm.py`` in one process, step by step, each on its own clock
(``charlm_race.py``'s way); both are scored on the whole validation split (the last 10%
by position) at a third, two thirds and all of the budget. The table gives the rule's
pick, both losses at the end, the difference, and how far the defaults' last score is
above their best. The corpora run one after the other.

    PYTHONPATH=src python benchmarks/charlm_grid.py 90 --threads 2 --clock wall \\
        [--corpora shakespeare-1mb,kjv] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import tempfile
import time

import torch
from charlm import plain_trainer, race  # benchmarks/, beside this script
from charlm_corpora import GRID, corpus_spec
from docs_section import write_section

from rnnkit.kernels import hardware
from rnnkit.tasks import charlm
from rnnkit.training import heap
from rnnkit.training.trainer import Progress, Trainer


def race_corpus(name: str, seconds: float, clock, tmp: str) -> dict:
    """The defaults and the plain script on one corpus; one row of the table."""
    said = []
    config = charlm.Config(
        data=corpus_spec(name, tmp), minutes=seconds / 60, eval_every=10**9, out=f"{tmp}/{name}"
    )
    vocab, streams, val_ids = charlm.prepare(config, say=said.append)
    task = charlm.build_task(config, vocab, streams, val_ids)
    ours = Trainer(config, task, config.out, Progress(io.StringIO()))
    train_ids = torch.cat([streams.inputs.reshape(-1), streams.targets[-1, -1:]])
    plain = plain_trainer(vocab, train_ids, seconds, f"{tmp}/{name}-plain")
    for trainer in (ours, plain):
        trainer.clock = clock
    marks = [seconds / 3, seconds * 2 / 3, seconds]
    rows = race({"rnnkit": ours, "plain": plain}, val_ids, marks)
    mine = [r["val_loss"] for r in rows if r["model"] == "rnnkit"]
    theirs = [r["val_loss"] for r in rows if r["model"] == "plain"]
    return {
        "corpus": name,
        "chars": len(train_ids),
        "symbols": len(vocab),
        "pick": said[0],
        "ours": mine[-1],
        "plain": theirs[-1],
        "above_best": mine[-1] - min(mine),
        "steps": (ours.step, plain.step),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| corpus | training chars | rnnkit defaults | plain script | difference | defaults' last "
        "above their best | steps (rnnkit, plain) | what the rule picked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pick = r["pick"].split(": a ")[0]
        lines.append(
            f"| {r['corpus']} | {r['chars']:,} | **{r['ours']:.3f}** | {r['plain']:.3f} | "
            f"{r['ours'] - r['plain']:+.3f} | {r['above_best']:.3f} | "
            f"{r['steps'][0]}, {r['steps'][1]} | {pick} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float, help="training time of each model")
    parser.add_argument("--corpora", default=",".join(GRID), help="comma-separated grid names")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    parser.add_argument("--write", default="", help="markdown file to write the table into")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    load_before, rows = os.getloadavg()[0], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora.split(","):
            rows.append(race_corpus(name, args.seconds, clock, tmp))
            print(rows[-1], flush=True)
    text = table(rows)
    print(text)
    if args.write:
        tag = f"charlm-grid-{args.seconds:g}"
        command = (
            f"PYTHONPATH=src python benchmarks/charlm_grid.py {args.seconds:g} "
            f"--threads {args.threads} --clock {args.clock} --corpora {args.corpora}"
        )
        header = (
            f"### {args.seconds:g} s a model\n\nCommand: `{command}`  \nDate: "
            f"{datetime.date.today()}; {hardware.cpu_model() or platform.processor()}, "
            f"torch {torch.__version__}, {args.threads} threads; load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n"
        )
        write_section(
            args.write, f"<!-- {tag}:start -->\n{header}\n{text}\n<!-- {tag}:end -->",
            f"<!-- {tag}:start -->", f"<!-- {tag}:end -->",
        )  # fmt: skip


if __name__ == "__main__":
    main()
