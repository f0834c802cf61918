"""CPU time of training the speech model to zero errors on three spoken utterances.

``tests/test_speech.py::test_model_overfits_three_utterances_to_zero_errors`` trains a
one-layer GRU of 64 units with CTC for 200 steps on three utterances synthesised with
espeak-ng, then checks that it transcribes all three exactly. The test checks the result;
this script times the same work on one torch thread (by default), ``--repeats`` times:
the synthesis and log-mel features (wall-clock seconds: espeak-ng is a child process), the
200 training steps (CPU seconds of the process, the figure the test used to bound, and
wall-clock seconds) and the greedy transcription (CPU seconds), with the error rates each
run ended on. The first run also pays for what happens once in a process (lazy imports and
loading the compiled kernels), so the later runs are the figure to compare.

    PYTHONPATH=src python benchmarks/speech_overfit_time.py
    PYTHONPATH=src python benchmarks/speech_overfit_time.py --repeats 5 --threads 2

Needs espeak-ng on the PATH.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from rnnkit.data import audio
from rnnkit.tasks import speech
from rnnkit.training.trainer import Progress, Trainer

TEXTS = ["one two", "nine", "three eight five"]
VOICES = ["en-us", "en-gb", "en-us+f3"]
STEPS = 200  # the test's steps: zero errors by step 60 to 110 over seeds 0 to 3


class Clock:
    """CPU seconds of the process and wall-clock seconds since the last ``lap``."""

    def __init__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def lap(self) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        spent = (cpu - self.cpu, wall - self.wall)
        self.cpu, self.wall = cpu, wall
        return spent


def utterances(espeak: str, folder: Path):
    """The test's three utterances: normalised log-mel series, the texts and the labels."""
    logmel = audio.LogMel(n_mels=20)
    raw = []
    for i, (text, voice) in enumerate(zip(TEXTS, VOICES, strict=True)):
        path = folder / f"{i}.wav"
        subprocess.run([espeak, "-v", voice, "-w", str(path), text], check=True)
        raw.append(logmel(audio.read_wav(path)))
    mean, std = audio.feature_stats(raw)
    series = [torch.from_numpy(audio.normalise(f, mean, std)) for f in raw]
    return series, [speech.BLANK] + sorted(set("".join(TEXTS)))


def overfit_config() -> speech.Config:
    """The test's configuration, field for field."""
    return speech.Config(hidden=64, layers=1, batch_size=3, dropout=0.0, lr=1e-2, warmup=10,
                         minutes=0.0, steps=STEPS, eval_every=STEPS, device="cpu",
                         weight_decay=0.0, stack=3, stride=2, schedule="constant")  # fmt: skip


def one_run(espeak: str) -> dict:
    """Seconds of each part of one run, and the error rates it ended on."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        series, labels = utterances(espeak, Path(tmp))
        times = {"features": clock.lap()}
        torch.manual_seed(0)
        config = overfit_config()
        parts = {"train": (series, TEXTS), "val": (series, TEXTS)}
        task = speech.build_task(config, labels, parts)
        Trainer(config, task, Path(tmp) / "run", Progress(io.StringIO())).fit()
        times["training"] = clock.lap()
        task.model.eval()
        scores, _ = speech.transcript_scores(task.model, series, TEXTS, labels)
        times["transcription"] = clock.lap()
    return {"times": times, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs, each from scratch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("needs espeak-ng on the PATH")
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}, {args.threads} thread(s), {STEPS} training steps")  # fmt: skip
    print("| run | features wall s | training CPU s | training wall s | transcription CPU s "
          "| CER | WER |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in range(1, args.repeats + 1):
        result = one_run(espeak)
        t = result["times"]
        print(f"| {run} | {t['features'][1]:.2f} | {t['training'][0]:.2f} | "
              f"{t['training'][1]:.2f} | {t['transcription'][0]:.2f} | {result['cer']:.2%} | "
              f"{result['wer']:.2%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
