"""``rnnkit bench distributed``: does a second process make each task train faster?

For each task on its built-in data, at its default model and global batch, the bench times
training steps of 1 process with 1 thread, then of 2 processes with 1 thread each under
``torchrun`` (DistributedDataParallel over gloo), on the same global batch, and prints the
steps per second of each and their ratio. Each process times its own steps between two
barriers, after a few steps of warm-up; the slower process sets the rate.

A run's steps are the same work on 1 or 2 processes, so on an idle machine with 2 cores the
ratio is at most 2: what it loses is the all-reduce of the gradients that backward cannot
hide, the step's work that is not cut (a batch's longest sequence sets every process's
time), and the machine's other load. ``--batch-size`` scales the global batch of every task
to show where a batch is too small to cut.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rnnkit import tasks
from rnnkit.data.pairs import TokenVocab
from rnnkit.training import distributed
from rnnkit.training.progress import Progress
from rnnkit.training.trainer import Task, Trainer

WARMUP = 3  # steps before the clock starts: kernels load, buffers are sized
TASK_NAMES = ("charlm", "classify", "seqclass", "tag", "forecast", "translate", "caption", "speech")


def training_task(name: str, config) -> Task:
    """The training task of ``config`` as the task's ``train`` builds it (no resuming, no
    baselines fitted: the bench and the tests time and compare the recurrent model)."""
    module = tasks.load_task(name)
    if name == "charlm":
        return module.build_task(config, *module.prepare(config))
    if name == "classify":
        classes, parts = module.prepare(config)
        texts = [module.tokenize(t, config.tokens) for t in parts["train"].texts]
        vocab = TokenVocab.build(texts, config.min_count)
        ratios = (
            module.fit_ratios(config, classes, vocab, parts["train"])
            if config.nb_features
            else None
        )
        return module.build_task(config, classes, vocab, parts, {}, ratios)
    if name == "seqclass":
        classes, _, parts = module.prepare(config)
        return module.build_task(config, classes, parts)
    if name == "caption":
        train_set, val_set, _ = module.splits(config)
        texts = [module.words(config, t) for refs in train_set.references for t in refs]
        vocab = TokenVocab.build(texts, config.min_freq)
        return module.build_task(config, vocab, train_set, val_set)
    if name == "speech":
        _, labels, parts = module.prepare(config)
        return module.build_task(config, labels, parts)
    return module.build_task(config, module.prepare(config))  # tag, forecast, translate


def time_steps(name: str, batch_scale: float, steps: int, out: str) -> dict:
    """Run in each process: build the task at its defaults, time ``steps`` training steps."""
    torch.set_num_threads(1)
    module = tasks.load_task(name)
    config = module.Config(device="cpu", minutes=0.0, steps=10**6, eval_every=10**6, out=out)
    if name == "classify":
        config.baseline = False
    batch = config.batch_size or 128  # unset in charlm: its rule picks 128 for a long run
    config.batch_size = max(2, round(batch * batch_scale))
    trainer = Trainer(config, training_task(name, config), out, Progress(io.StringIO()))
    for _ in range(WARMUP):
        trainer.train_step()
    distributed.barrier(trainer.world)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds = time.perf_counter() - start
    seconds = distributed.agree(trainer.world, seconds, False)[0]  # the slowest process's
    return {"task": name, "batch_size": config.batch_size, "steps": steps, "seconds": seconds}


def launch(name: str, processes: int, args, work: Path) -> dict:
    """One measurement: ``processes`` processes of 1 thread each under torchrun."""
    report = work / f"{name}-{processes}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m", "rnnkit.tools.bench_distributed",
               "--worker", name, "--steps", str(args.steps), "--batch-scale",
               str(args.batch_scale), "--report", str(report)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} on {processes} process(es) failed:\n{done.stderr[-2000:]}")
    return json.loads(report.read_text())


def measure(args) -> list[dict]:
    rows = []
    print(f"{'task':10} {'batch':>6} {'1 process':>12} {'2 processes':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as work:
        for name in args.tasks.split(","):
            one, two = (launch(name, n, args, Path(work)) for n in (1, 2))
            rate = [r["steps"] / r["seconds"] for r in (one, two)]
            row = {**one, "steps_per_s_1": rate[0], "steps_per_s_2": rate[1]}
            row["ratio"] = rate[1] / rate[0]
            rows.append(row)
            print(f"{name:10} {one['batch_size']:6d} {rate[0]:9.2f}/s {rate[1]:9.2f}/s "
                  f"{row['ratio']:5.2f}x", flush=True)  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench distributed", description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated tasks")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--batch-scale", type=float, default=1.0,
                        help="global batch as a multiple of each task's default")  # fmt: skip
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one process of a measurement, under torchrun
        with tempfile.TemporaryDirectory() as out:
            row = time_steps(args.worker, args.batch_scale, args.steps, out)
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.report).write_text(json.dumps(row))
        return 0
    unknown = sorted(set(args.tasks.split(",")) - set(TASK_NAMES))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; known: {list(TASK_NAMES)}")
    rows = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
