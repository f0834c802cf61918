"""Text classification on a suite of real text sets: the classify default against its parts.

Each set (:mod:`rnnkit.data.textsets`, or ``rotten_tomatoes``) is split once per seed,
80/10/10, by the classify task itself. One ``rnnkit train classify`` run per set and seed
trains the recurrent model (its best weights by validation loss), fits TF-IDF + LR and
NB-LR on the same training part, and keeps the model of highest validation accuracy among
the three and their mean (the default, ``model=auto``). Its test.json holds the test scores
of the model kept and of every candidate, which make the table: the default, the recurrent
model alone, TF-IDF + LR and NB-LR, each with accuracy and macro-F1, per seed and as the mean
over the seeds. The target: the default's mean accuracy at least the better baseline's mean
minus 0.5 points on every set.

    PYTHONPATH=src python benchmarks/classify.py [--sets snippets,debates,...]
        [--seeds 1,2,3] [--threads 1] [--set epochs=8 ...] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import tempfile
import time

import numpy as np
import torch
from docs_section import write_section  # benchmarks/, beside this script

from rnnkit.tasks import classify
from rnnkit.training import config as configuration
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

START, END = "<!-- classify-suite:start -->", "<!-- classify-suite:end -->"
SETS = "snippets,debates,conventions,shakespeare"
MODELS = ("default", "rnn", "tfidf", "nblr", "ensemble")  # the table's columns
KEYS = {m: f"test_{m}_" for m in MODELS} | {"default": "test_"}  # their names in test.json
SLACK = 0.005  # the target: the default at least the better baseline minus half a point


def parse_settings(pairs: list[str]) -> dict:
    """``key=value`` flags -> config values of the right type (checked by from_dict)."""
    hints = {f.name: f.type for f in dataclasses.fields(classify.Config)}
    values = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        kind = str(hints.get(key, "str"))
        values[key] = json.loads(text) if kind in ("int", "float", "bool") else text
    return values


def run(data: str, seed: int, settings: dict, run_dir: str) -> dict:
    """One classify run; the scores of its test.json, with the seconds it took."""
    values = {**settings, "data": data, "seed": seed, "out": run_dir}
    config = configuration.from_dict(classify.Config, values)
    start = time.perf_counter()
    classify.train(config, progress=Progress(io.StringIO()))
    with open(os.path.join(run_dir, "test.json")) as f:
        result = json.load(f)
    scores = {m: (result[KEYS[m] + "accuracy"], result[KEYS[m] + "macro_f1"]) for m in MODELS}
    return {"kept": result["model"], "examples": result["test_examples"], **scores,
            "seconds": time.perf_counter() - start}  # fmt: skip


def cells(r: dict) -> str:
    return " | ".join(f"{r[m][0]:.4f} / {r[m][1]:.4f}" for m in MODELS)


def met(r: dict) -> bool:
    return r["default"][0] >= max(r["tfidf"][0], r["nblr"][0]) - SLACK


def mean_of(results: list[dict]) -> dict:
    """The mean scores over the seeds, and which models were kept how often."""
    mean = {m: tuple(np.mean([r[m] for r in results], axis=0)) for m in MODELS}
    kept = [r["kept"] for r in results]
    mean["kept"] = ", ".join(f"{k} {kept.count(k)}" for k in dict.fromkeys(kept))
    mean["examples"] = round(np.mean([r["examples"] for r in results]))
    mean["seconds"] = float(np.mean([r["seconds"] for r in results]))
    return mean


def rows_of(name: str, results: list[dict], seeds: list[int]) -> list[str]:
    rows = []
    for seed, r in zip(seeds, results, strict=True):
        rows.append(f"| {name} | {seed} | {r['examples']} | {r['kept']} | {cells(r)} "
                    f"| {'yes' if met(r) else 'no'} | {r['seconds']:.0f} |")  # fmt: skip
    m = mean_of(results)
    rows.append(f"| **{name}** | **mean** | {m['examples']} | {m['kept']} | {cells(m)} "
                f"| **{'yes' if met(m) else 'no'}** | {m['seconds']:.0f} |")  # fmt: skip
    return rows


def section(rows: list[str], command: str, when: str, load: float, cpu: str) -> str:
    return "\n".join(
        [
            START,
            f"`{command}`, started {when}; {cpu}, load average {load:.1f} at the start (the "
            "machine's two cores were shared with other runs). Each cell is test accuracy / "
            "macro-F1. *default*: the model the run keeps (`model=auto`: chosen on the "
            "validation part among the recurrent model, TF-IDF + LR, NB-LR and their "
            "*ensemble*, the mean of their probabilities; *kept* says which); *rnn*: the "
            "recurrent model alone (its best weights by validation loss); *target*: the "
            "default's accuracy at least the better of TF-IDF + LR and NB-LR minus 0.5 points.",
            "",
            "| set | seed | test texts | kept | default | rnn | TF-IDF + LR | NB-LR | ensemble "
            "| target | s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            END,
        ]
    )


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=SETS, help="comma-separated text sets")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated split seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--write", default="", help="markdown file to write the section into")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    load, settings = os.getloadavg()[0], parse_settings(args.set)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    seeds, rows = [int(s) for s in args.seeds.split(",")], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            results = [run(name, s, settings, f"{tmp}/{name}-{s}") for s in seeds]
            rows += rows_of(name, results, seeds)
            print("\n".join(rows_of(name, results, seeds)), flush=True)
    flags = "".join(f" --set {p}" for p in args.set)
    command = (f"PYTHONPATH=src python benchmarks/classify.py --sets {args.sets} "
               f"--seeds {args.seeds} --threads {args.threads}{flags}")  # fmt: skip
    text = section(rows, command, when, load, cpu_name())
    print(text)
    if args.write:
        write_section(args.write, text, START, END)


if __name__ == "__main__":
    main()
