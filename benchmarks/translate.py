"""Translation bar: numbers-en-es with held-out numbers, with and without attention.

The issue's bar: exact match of at least 95% on the held-out test numbers after at most
5 minutes of CPU training with attention. Each case trains a ``translate`` run for the same
minutes (evaluation time counts against them, as the trainer keeps time), then decodes the
run's test split greedily and with beam search; the tables give exact match by source
length (in tokens) and BLEU, for the README of the bar in docs/benchmarks.md.

    python benchmarks/translate.py                          # luong, bahdanau, none; 5 minutes
    python benchmarks/translate.py --attention luong none --minutes 2
    python benchmarks/translate.py --quick                  # seconds per case, a smoke test

Runs go to ``runs/bench-translate/<attention>``, the results to ``results.json`` beside
them, and a heat map of the attention of one test sentence to ``attention-<case>.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import torch

from rnnkit.data import numbers
from rnnkit.data.pairs import detokenize
from rnnkit.tasks import translate as tr
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

BUCKETS = ((1, 3), (4, 6), (7, 9), (10, 12), (13, 99))  # source lengths in tokens
BAR = 0.95
EXAMPLE = "three hundred and forty-two thousand, seven hundred and eighteen"


def train_case(attention: str, minutes: float, count: int, root: Path, threads: int) -> Path:
    config = tr.Config(
        attention=attention,
        minutes=minutes,
        numbers=count,
        device="cpu",
        threads=threads,
        out=str(root / attention),
    )
    start = time.perf_counter()
    trainer = tr.train(config, progress=Progress(io.StringIO()))
    print(f"{attention}: {trainer.step} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return Path(config.out)


def bucket_of(length: int) -> str:
    low, high = next(b for b in BUCKETS if b[0] <= length <= b[1])
    return f"{low}-{high}" if high < 99 else f"{low}+"


def score_case(run: Path, beam: int) -> dict:
    """Exact match overall and by source length, and BLEU, on the run's test numbers."""
    config, (source_vocab, target_vocab), model = tr.load_run(run, "cpu")
    pairs = tr.tokenized(config, tr.held_out_pairs(config, numbers.NAME))
    ids = tr.encode_pairs(pairs, source_vocab, target_vocab)
    search = tr.search_for(beam, config.length_penalty)
    found = tr.translate_ids(model, [s for s, _ in ids], search)
    hypotheses = [target_vocab.decode(h) for h in found]
    by_length: dict[str, list[int]] = {}
    for (source, target), hyp in zip(pairs, hypotheses, strict=True):
        by_length.setdefault(bucket_of(len(source)), []).append(int(hyp == target))
    scores = tr.match_scores(hypotheses, [t for _, t in pairs], config.tokens)
    lengths = {k: (sum(v) / len(v), len(v)) for k, v in by_length.items()}
    return {**scores, "by_length": lengths, "pairs": len(pairs)}


def heat_map(run: Path, path: Path) -> str:
    config, vocabs, model = tr.load_run(run, "cpu")
    source = tr.source_ids(config, vocabs[0], [EXAMPLE])[0]
    output = tr.translate_ids(model, [source])[0]
    tr.save_heatmap(model, vocabs, source, output, path)
    return detokenize(vocabs[1].decode(output))


def table(results: dict) -> str:
    labels = [f"{low}-{high}" if high < 99 else f"{low}+" for low, high in BUCKETS]
    any_case = next(iter(results.values()))
    counts = " | ".join(str(any_case["by_length"].get(k, (0, 0))[1]) for k in labels)
    lines = [
        "| attention | decoding | exact match | BLEU | " + " | ".join(labels) + " |",
        "|---|---|---|---|" + "---|" * len(labels),
        f"| (test pairs) | | {any_case['pairs']} | | {counts} |",
    ]
    for case, r in results.items():
        by = " | ".join(f"{r['by_length'].get(k, (0, 0))[0]:.1%}" for k in labels)
        lines.append(f"| {case} | {r['exact']:.2%} | {r['bleu']:.2f} | {by} |")
    return "\n".join(lines)


def curve_table(root: Path, cases: list[str]) -> str:
    """Validation exact match (greedy) at each evaluation: how fast each case learns."""
    lines = [
        "| attention | step: validation exact match (seconds) | steps in total |",
        "|---|---|---|",
    ]
    for case in cases:
        rows = [
            json.loads(line) for line in (root / case / "metrics.jsonl").read_text().splitlines()
        ]
        points = ", ".join(
            f"{r['step']}: {r['val_exact']:.1%} ({r['elapsed']:.0f} s)" for r in rows
        )
        lines.append(f"| {case} | {points} | {rows[-1]['step']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", nargs="+", default=["luong", "bahdanau", "none"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per case")
    parser.add_argument("--numbers", type=int, default=40_000, help="numbers made, all splits")
    parser.add_argument("--beam", type=int, default=5, help="beam width beside greedy")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="runs/bench-translate")
    parser.add_argument("--quick", action="store_true", help="0.2 minutes, 2,000 numbers")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)  # as rnnkit train does with --threads
    minutes, count = (0.2, 2000) if args.quick else (args.minutes, args.numbers)
    root = Path(args.out)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch "
        f"{torch.__version__}, {minutes} minutes per case",
        flush=True,
    )
    results, examples = {}, {}
    for attention in args.attention:
        run = train_case(attention, minutes, count, root, args.threads)
        for beam in (1, args.beam):
            name = f"{attention} | {'greedy' if beam == 1 else f'beam {beam}'}"
            results[name] = score_case(run, beam)
            print(f"{name}: exact {results[name]['exact']:.2%}", flush=True)
        if attention != "none":
            examples[attention] = heat_map(run, root / f"attention-{attention}.png")
    (root / "results.json").write_text(
        json.dumps({"results": results, "examples": examples}, indent=2)
    )
    print(table(results))
    print()
    print(curve_table(root, args.attention))
    best = max((r["exact"] for k, r in results.items() if not k.startswith("none")), default=0.0)
    print(
        f"\nbar (exact match >= {BAR:.0%} with attention): {'met' if best >= BAR else 'NOT met'}"
        f" ({best:.2%}); load average now {os.getloadavg()[0]:.1f}"
    )
    for attention, text in examples.items():
        print(f"{attention}: {EXAMPLE!r} -> {text!r}")


if __name__ == "__main__":
    main()
