"""Speech recognition bar: synthesised digit strings, test voices never heard in training.

The issue's bar: word error rate at most 5% on the test split (speakers whose espeak-ng
variant is held out of training) after at most 15 minutes of CPU training. The script

1. synthesises the digits corpus (:func:`rnnkit.data.speech.generate`) unless it is there;
2. trains a small character language model (``charlm``) on the training transcripts, for
   shallow fusion;
3. trains ``speech`` with its defaults for ``--minutes`` (evaluation counts against them);
4. scores the best model on the test split (held-out voices) and, for contrast, on the
   validation split (training voices): best path, prefix beam search, and beam search with
   the language model, whose weight and length bonus are picked on the validation split.

With ``--clock thread`` (the default) training time is the CPU time of the training thread,
so that other programs on a shared machine do not eat the budget; ``--clock wall`` counts
wall-clock time.

    PYTHONPATH=src python benchmarks/speech.py                  # 15 minutes
    PYTHONPATH=src python benchmarks/speech.py --quick          # a smoke test
    PYTHONPATH=src python benchmarks/speech.py --write docs/benchmarks.md

Everything goes under ``--out`` (default ``runs/bench-speech``): the corpus, both runs and
``results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import time
from pathlib import Path

import torch
from docs_section import write_section  # benchmarks/, beside this script

from rnnkit.data import speech as corpus
from rnnkit.tasks import charlm, speech
from rnnkit.training import config as configuration
from rnnkit.training import heap
from rnnkit.training.trainer import MODEL_FILE, Progress, Trainer

START, END = "<!-- speech:start -->", "<!-- speech:end -->"
WER_BAR = 0.05
CLOCKS = {"thread": time.thread_time, "wall": time.perf_counter}
FUSION_GRID = [(w, b) for w in (0.25, 0.5, 1.0) for b in (0.5, 1.5)]  # weight, bonus
GRID_UTTERANCES = 100  # the first validation utterances, on which fusion is tuned


def corpus_dir(root: Path, hours: float, seed: int) -> Path:
    data = root / "data"
    if not (data / "test.csv").exists():
        start = time.perf_counter()
        corpus.generate(data, hours=hours, seed=seed, kind="digits")
        print(f"corpus: {hours} h synthesised in {time.perf_counter() - start:.0f} s", flush=True)
    return data


def train_lm(root: Path, data: Path, minutes: float, clock: str) -> Path:
    """A one-layer LSTM of 128 units on the training transcripts, one per line."""
    text = root / "train-transcripts.txt"
    text.write_text("".join(f"{e.transcript}\n" for e in corpus.read_manifest(data / "train.csv")))
    config = charlm.Config(data=str(text), hidden=128, window=32, batch_size=32, lr=5e-3,
                           minutes=minutes, eval_every=100, device="cpu", precision="fp32",
                           val_chars=20_000, out=str(root / "charlm"))  # fmt: skip
    vocab, streams, val_ids = charlm.prepare(config)
    task = charlm.build_task(config, vocab, streams, val_ids)
    trainer = Trainer(config, task, config.out, Progress(io.StringIO()))
    trainer.clock = CLOCKS[clock]
    configuration.save(config, Path(config.out) / "config.json", task=charlm.NAME)
    vocab.save(Path(config.out) / "vocab.json")
    trainer.fit()
    print(f"charlm: {trainer.step} steps, best val {trainer.best / math.log(2):.3f} bits/char")
    return root / "charlm"


def train_speech(root: Path, data: Path, minutes: float, clock: str, quick: bool):
    """The speech task with its defaults; returns (config, labels, parts, seconds)."""
    config = speech.Config(data=str(data), minutes=minutes, device="cpu", threads=1, eval_every=150,
                           out=str(root / "speech"))  # fmt: skip
    if quick:
        config.hidden, config.layers, config.eval_every = 32, 1, 20
    torch.set_num_threads(1)
    features, labels, parts = speech.prepare(config)
    run_dir = Path(config.out)
    trainer = Trainer(config, speech.build_task(config, labels, parts), run_dir,
                      Progress(io.StringIO()))  # fmt: skip
    trainer.clock = CLOCKS[clock]
    configuration.save(config, run_dir / "config.json", task=speech.NAME)
    (run_dir / "labels.json").write_text(json.dumps(labels) + "\n")
    features.save(run_dir / "features.json")
    wall = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - wall
    print(f"speech: {trainer.step} steps, {trainer.elapsed:.0f} s {clock} time, {wall:.0f} s wall")
    training = {"steps": trainer.step, "train_s": trainer.elapsed, "wall_s": wall}
    (run_dir / "training.json").write_text(json.dumps(training) + "\n")
    return config, labels, parts, training


def trained_speech(root: Path):
    """(config, labels, parts, training) of the speech run an earlier call trained."""
    config, labels, _, _ = speech.load_run(root / "speech")
    _, _, parts = speech.prepare(config)  # the features are cached beside the manifests
    return config, labels, parts, json.loads((root / "speech" / "training.json").read_text())


def score(model, part, labels, beam: int, lm=None, weight=0.0, bonus=0.0) -> dict:
    """Error rates, and the CPU seconds of the network's forward pass and the decoding."""
    start = time.thread_time()
    options = {"lm_weight": weight, "length_bonus": bonus} if lm is not None else {}
    rates, _ = speech.transcript_scores(model, *part, labels, beam, lm, **options)
    return {**rates, "seconds": time.thread_time() - start}


def evaluate(root: Path, lm_run: Path, labels, parts, beam: int) -> dict:
    _, _, _, model = speech.load_run(root / "speech", "cpu")
    lm = speech.lm_scorer(lm_run, labels)
    tuning = tuple(column[:GRID_UTTERANCES] for column in parts["val"])
    tried = {f"{w} {b}": score(model, tuning, labels, beam, lm, w, b) for w, b in FUSION_GRID}
    weight, bonus = map(float, min(tried, key=lambda k: (tried[k]["wer"], tried[k]["cer"])).split())
    print(f"fusion picked on validation: weight {weight}, bonus {bonus}", flush=True)
    results = {"fusion": {"lm_weight": weight, "length_bonus": bonus, "val_grid": tried}}
    for split, about in (("test", "held-out voices"), ("val", "training voices")):
        results[f"{split} ({about})"] = {
            "greedy": score(model, parts[split], labels, 1),
            f"beam {beam}": score(model, parts[split], labels, beam),
            f"beam {beam} + LM": score(model, parts[split], labels, beam, lm, weight, bonus),
            "utterances": len(parts[split][0]),
        }
    return results


def table(results: dict) -> str:
    lines = ["| split | decoding | WER | CER | CPU time |", "|---|---|---|---|---|"]
    for split, rows in results.items():
        if split == "fusion":
            continue
        for name, r in rows.items():
            if name != "utterances":
                lines.append(
                    f"| {split} | {name} | {r['wer']:.2%} | {r['cer']:.2%} | {r['seconds']:.1f} s |"
                )
    return "\n".join(lines)


def section(args, config, results, training, corpus_about, load) -> str:
    test = results[next(k for k in results if k.startswith("test"))]
    best = min(v["wer"] for k, v in test.items() if k != "utterances")
    meeting = [k for k, v in test.items() if k != "utterances" and v["wer"] <= WER_BAR]
    met = f"met by {', '.join(meeting)}" if meeting else "NOT met"
    c = config
    model = (
        f"`rnnkit train speech`: {c.n_mels} log-mels, {c.stack} frames "
        f"stacked every {c.stride}, {c.layers} {'bidirectional ' if c.bidirectional else ''}"
        f"{c.cell.upper()} layers of {c.hidden}, CTC, AdamW at {c.lr:g}, batch {c.batch_size}"
    )
    fusion = results["fusion"]
    clock = "CPU time of the training thread" if args.clock == "thread" else "wall-clock time"
    splits, held = corpus_about["splits"], corpus_about["plan"]["test_variants"]
    grid = {(r["wer"], r["cer"]) for r in fusion["val_grid"].values()}
    tie = " (every setting tied there, so the first was taken)" if len(grid) == 1 else ""
    hours = splits["train"]["seconds"] / 3600
    return "\n".join([
        START,
        "## Speech recognition (CTC)",
        "",
        f"Measured {datetime.date.today()} with `PYTHONPATH=src python benchmarks/speech.py "
        f"--minutes {args.minutes:g} --hours {args.hours:g}` on {os.cpu_count()} shared CPUs "
        f"(load average {load[0]:.1f} at the start, {load[1]:.1f} at the end), one torch thread.",
        "",
        f"Data: synthesised digit strings (3 to 7 digits, espeak-ng, noise at 15 to 35 dB SNR), "
        f"{splits['train']['utterances']} training utterances ({hours:.2f} h), "
        f"{splits['val']['utterances']} validation, {splits['test']['utterances']} test. Test "
        f"speakers use the variants {held}, never heard in training. "
        f"Model: {model}.",
        "",
        f"Training: {training['steps']} steps in {training['train_s'] / 60:.1f} minutes of "
        f"{clock} ({training['wall_s'] / 60:.1f} minutes wall-clock on the shared machine). "
        f"{training.get('note', '')} "
        f"Language model: a charlm run (one LSTM layer of 128) trained for {args.lm_minutes:g} "
        f"minute(s) of the same clock on the training transcripts; its weight "
        f"{fusion['lm_weight']:g} and length bonus {fusion['length_bonus']:g} were picked on "
        f"{GRID_UTTERANCES} utterances of the validation split{tie}. CPU time is that of the "
        "network's forward pass and the decoding of the whole split.",
        "",
        table(results),
        "",
        f"Bar (test, WER <= {WER_BAR:.0%} after <= 15 minutes of CPU training): **{met}** "
        f"(best test WER {best:.2%}).",
        END,
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="speech training time")
    parser.add_argument("--lm-minutes", type=float, default=1.0, help="charlm training time")
    parser.add_argument("--hours", type=float, default=1.5, help="hours of speech to synthesise")
    parser.add_argument("--beam", type=int, default=8, help="beam width")
    parser.add_argument("--clock", choices=["thread", "wall"], default="thread")
    parser.add_argument("--seed", type=int, default=1, help="seed of the corpus")
    parser.add_argument("--out", default="runs/bench-speech")
    parser.add_argument("--write", default="", help="markdown file to write the section into")
    parser.add_argument("--quick", action="store_true", help="a smoke test of a minute or two")
    parser.add_argument("--reuse", action="store_true", help="keep runs already in --out")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    if args.quick:
        args.minutes, args.lm_minutes, args.hours = 0.3, 0.1, 0.05
    root, load = Path(args.out), [os.getloadavg()[0]]
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f}, torch {torch.__version__}")
    data = corpus_dir(root, args.hours, args.seed)
    lm_run = root / "charlm"
    if not (args.reuse and (lm_run / MODEL_FILE).exists()):
        lm_run = train_lm(root, data, args.lm_minutes, args.clock)
    if args.reuse and (root / "speech" / "training.json").exists():
        config, labels, parts, training = trained_speech(root)
    else:
        config, labels, parts, training = train_speech(
            root, data, args.minutes, args.clock, args.quick
        )
    if not (root / "speech" / MODEL_FILE).exists():
        raise SystemExit("the speech run saved no model")
    results = evaluate(root, lm_run, labels, parts, args.beam)
    load.append(os.getloadavg()[0])
    (root / "results.json").write_text(json.dumps({"training": training, **results}, indent=1))
    about = json.loads((data / "corpus.json").read_text())
    text = section(args, config, results, training, about, load)
    print(text)
    if args.write:
        write_section(args.write, text, START, END)
        print(f"wrote the section into {args.write}")


if __name__ == "__main__":
    main()
