"""Speech recognition on real voices: the Free Spoken Digit Dataset, leave one speaker out.

For each of the five speakers in ``../shared/data/fsdd`` in turn, the other four train (the
last of them by name validates) and the one left out is the test: a recogniser is scored on
a voice it never heard. Each fold reports

- the classical baseline: a ten-way logistic regression on each recording's log-mel
  features summarised over time (the mean and deviation of every band in each third of the
  recording), fitted on the training speakers;
- with ``--minutes M`` above 0, ``rnnkit train speech`` on the fold's manifests for M
  minutes with its defaults (and any ``--flags``), then its test report: word error rate
  of best path and of beam search.

A recording is one digit, so the baseline's word error rate is 1 - its accuracy.

    PYTHONPATH=src python benchmarks/speech_fsdd.py --minutes 0          # the baseline alone
    PYTHONPATH=src python benchmarks/speech_fsdd.py --minutes 15 --flags "--time-masks 2"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rnnkit.data import fsdd
from rnnkit.data.audio import LogMel
from rnnkit.data.manifests import load_features
from rnnkit.tasks import speech
from rnnkit.training import config as configuration

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def summary(features: np.ndarray) -> np.ndarray:
    """(T, M) log-mel frames -> (6 M,) the mean and deviation of each band in each third."""
    thirds = np.array_split(features, 3) if len(features) >= 3 else [features] * 3
    return np.concatenate([np.r_[t.mean(0), t.std(0)] for t in thirds])


def split_summaries(manifest: Path, logmel: LogMel):
    loaded = load_features(manifest, logmel)
    x = np.stack([summary(f) for f in loaded.features]).astype(np.float32)
    y = np.array([fsdd.DIGITS.index(t) for t in loaded.transcripts])
    return torch.from_numpy(x), torch.from_numpy(y)


def baseline_accuracy(folder: Path, l2: float = 1e-3) -> dict:
    """Multinomial logistic regression on the training speakers (standardised summaries,
    L-BFGS), scored on the validation and test speakers."""
    logmel = LogMel(n_mels=40)
    (x, y), *held = (split_summaries(folder / f"{s}.csv", logmel) for s in ("train", "val", "test"))
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    weights = torch.zeros(x.shape[1], 10, requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = ((x - mean) / std) @ weights + bias
        loss = torch.nn.functional.cross_entropy(logits, y) + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scores = [(((hx - mean) / std) @ weights + bias).argmax(1) == hy for hx, hy in held]
    return {
        "val_accuracy": scores[0].float().mean().item(),
        "test_accuracy": scores[1].float().mean().item(),
    }


def model_report(folder: Path, minutes: float, flags: str, out: Path) -> dict:
    """Train ``speech`` on the fold for ``minutes`` and return its test report."""
    parser = argparse.ArgumentParser()
    configuration.add_arguments(parser, speech.Config)
    given = vars(parser.parse_args(flags.split()))
    config = configuration.from_dict(
        speech.Config, {**given, "data": str(folder), "minutes": minutes, "out": str(out)}
    )
    speech.train(config)
    return json.loads((out / "test.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="the FSDD folder")
    parser.add_argument("--out", default="runs/bench-speech-fsdd", help="manifests and runs")
    parser.add_argument("--minutes", type=float, default=15.0, help="per fold (0: baseline only)")
    parser.add_argument("--flags", default="", help="speech flags for every fold's model")
    args = parser.parse_args()
    speakers = sorted({r.speaker for r in fsdd.read_recordings(args.data)})
    rows = []
    for speaker in speakers:
        folder = Path(args.out) / f"test-{speaker}"
        fsdd.write_manifests(args.data, folder, test=[speaker])
        start = time.perf_counter()
        row = {"test_speaker": speaker, **baseline_accuracy(folder)}
        row["baseline_seconds"] = round(time.perf_counter() - start, 1)
        if args.minutes > 0:
            report = model_report(folder, args.minutes, args.flags, folder / "run")
            row.update({k: report[k] for k in ("greedy_wer", "beam_wer") if k in report})
        rows.append(row)
        print(json.dumps(row), flush=True)
    test = [r["test_accuracy"] for r in rows]
    print(f"baseline word accuracy, leave one speaker out: mean {np.mean(test):.3f}, "
          f"min {min(test):.3f}, max {max(test):.3f}")  # fmt: skip
    for key in ("greedy_wer", "beam_wer"):
        if all(key in r for r in rows):
            wers = [r[key] for r in rows]
            print(
                f"model {key}: mean {np.mean(wers):.3f}, min {min(wers):.3f}, max {max(wers):.3f}"
            )
    Path(args.out, "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
