"""Captioning bar: generated scenes, test splits of combinations never seen in training.

The issue's bar: exact match of at least 80% and BLEU-4 of at least 60 on the test split
(each scene holds a thing at a place it is never seen at in training) after at most 10
minutes of CPU training. The run trains ``caption`` with its defaults for the given
minutes (evaluation time counts against them, as the trainer keeps time), then captions the
test split greedily and with beam search, the harder ``test-pairs`` split (a shape in a
colour never seen in training) and, for contrast, the validation split (only what training
saw). Exact match is also given by the number of things in the scene.

    python benchmarks/caption.py                 # 10 minutes
    python benchmarks/caption.py --minutes 3
    python benchmarks/caption.py --quick         # a smoke test of seconds

The run goes to ``runs/bench-caption`` (with its gallery.png), the results to
``results.json`` beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import torch

from rnnkit.data import scenes
from rnnkit.data.pairs import detokenize
from rnnkit.tasks import caption as cap
from rnnkit.training import heap
from rnnkit.training.trainer import Progress

EXACT_BAR, BLEU_BAR = 0.80, 60.0
KINDS = {
    "test": "a thing at an unseen place",
    "test-pairs": "an unseen shape-colour pair",
    "val": "as in training",
}


def train_run(minutes: float, root: Path, threads: int, quick: bool) -> Path:
    sizes = dict(train_scenes=500, val_scenes=50, test_scenes=50) if quick else {}
    config = cap.Config(minutes=minutes, device="cpu", threads=threads, out=str(root), **sizes)
    start = time.perf_counter()
    trainer = cap.train(config, progress=Progress(io.StringIO()))
    print(f"{trainer.step} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def score(run: Path, split: str, beam: int) -> dict:
    """Exact match and BLEU-4 on a split, and exact match by the number of things."""
    config, vocab, model = cap.load_run(run, "cpu")
    count = config.test_scenes if split.startswith("test") else config.val_scenes
    examples = cap.scene_examples(config, split, count)
    scores, found = cap.decoded_scores(model, examples, vocab, config, beam=beam)
    by_count: dict[int, list[int]] = {}
    for index, text in enumerate(found):
        things = len(scenes.scene(config.seed, split, index))
        refs = [detokenize(cap.words(config, t)) for t in examples.references[index]]
        by_count.setdefault(things, []).append(int(text in refs))
    exact_by = {n: sum(v) / len(v) for n, v in sorted(by_count.items())}
    return {**scores, "by_things": exact_by, "images": count}


def table(results: dict) -> str:
    lines = [
        "| split | decoding | exact match | BLEU-4 | 1 thing | 2 things | 3 things |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        by = " | ".join(f"{r['by_things'].get(n, 0.0):.1%}" for n in (1, 2, 3))
        lines.append(f"| {name} | {r['exact']:.1%} | {r['bleu']:.1f} | {by} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time")
    parser.add_argument("--beam", type=int, default=3, help="beam width beside greedy")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="runs/bench-caption")
    parser.add_argument("--quick", action="store_true", help="0.2 minutes, 500 scenes")
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    torch.set_num_threads(args.threads)  # as rnnkit train does with --threads
    minutes = 0.2 if args.quick else args.minutes
    root = Path(args.out)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch "
        f"{torch.__version__}, {minutes} minutes of training",
        flush=True,
    )
    run = train_run(minutes, root, args.threads, args.quick)
    results = {}
    cases = (("test", 1), ("test", args.beam), ("test-pairs", 1), ("val", 1))
    for split, beam in cases:
        name = f"{split} ({KINDS[split]}) | " + ("greedy" if beam == 1 else f"beam {beam}")
        results[name] = score(run, split, beam)
        print(f"{name}: exact {results[name]['exact']:.1%}", flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    test = results[next(iter(results))]
    met = test["exact"] >= EXACT_BAR and test["bleu"] >= BLEU_BAR
    print(
        f"\nbar (test, greedy: exact >= {EXACT_BAR:.0%} and BLEU-4 >= {BLEU_BAR:.0f}): "
        f"{'met' if met else 'NOT met'} ({test['exact']:.1%}, {test['bleu']:.1f}); "
        f"load average now {os.getloadavg()[0]:.1f}; gallery: {run / 'gallery.png'}"
    )


if __name__ == "__main__":
    main()
