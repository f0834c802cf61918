"""The speech task's input: each part of the corpus as log-mel features, their normalisation
by the training part's statistics (:class:`Features`, saved with a run), and batches of
utterances of similar length.

The corpus is a directory of train/val/test manifests, one manifest CSV (split here into
train and val), or the synthesised digit strings (:mod:`rnnkit.data.speech`, cached under
``$XDG_CACHE_HOME/rnnkit/speech``). Features are cached beside each manifest.

Shape letters: T frames, B batch, F features per frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from rnnkit.data import audio
from rnnkit.data import speech as corpus
from rnnkit.data.corpus import CorpusError
from rnnkit.data.files import write_json
from rnnkit.data.manifests import Loaded

if TYPE_CHECKING:
    from rnnkit.tasks.speech import Config


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def digits_dir(config: Config) -> Path:
    """Where the synthesised digits corpus of these settings is cached."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "rnnkit" / "speech" / f"digits-{config.hours:g}h-seed{config.seed}"


def read_parts(config: Config, logmel: audio.LogMel) -> dict[str, tuple[list, list[str]]]:
    """(log-mel features (T_i, F), transcripts) of the train, val and (when there is one)
    test parts, before normalisation; unreadable and silent files are skipped with a note."""
    source = Path(digits_dir(config) if config.data == "digits" else config.data)
    if config.data == "digits" and not (source / "test.csv").exists():
        say(f"synthesising {config.hours:g} h of digit strings into {source} (once)")
        corpus.generate(source, hours=config.hours, seed=config.seed, kind="digits")
    if source.is_dir():
        files = {p: source / f"{p}.csv" for p in ("train", "val", "test")}
        missing = [str(f) for p, f in files.items() if p != "test" and not f.exists()]
        if missing:
            raise CorpusError(f"{source}: a speech data directory needs {missing}")
        return {p: load_part(f, logmel, p) for p, f in files.items() if f.exists()}
    found = load_found(source, logmel, "data")
    features, texts = found.features, found.transcripts
    part = held_out(source, found.speakers, config)
    return {p: ([features[i] for i in rows], [texts[i] for i in rows]) for p, rows in part.items()}


def held_out(source: Path, speakers: list[str], config: Config) -> dict[str, list[int]]:
    """The rows of one manifest split into train and val by ``--seed``: by speaker when the
    manifest names every file's speaker (``val_fraction`` of the speakers, at least one, so
    validation hears voices training did not), else by utterance."""
    rng = np.random.default_rng(config.seed)
    named = sorted(set(speakers))
    if len(named) > 1 and "" not in named:
        held = set(rng.permutation(named)[: max(1, round(len(named) * config.val_fraction))])
        say(f"{source}: validating on speaker(s) {sorted(held)}, unheard in training")
        rows = {"train": [], "val": []}
        for i, speaker in enumerate(speakers):
            rows["val" if speaker in held else "train"].append(i)
        return rows
    order = rng.permutation(len(speakers)).tolist()
    held = max(1, round(len(speakers) * config.val_fraction))
    if held >= len(speakers):
        raise CorpusError(f"{source}: {len(speakers)} utterances are too few to hold some out")
    return {"train": order[held:], "val": order[:held]}


def load_found(manifest: Path, logmel: audio.LogMel, part: str) -> Loaded:
    """A manifest's usable files with their features (cached beside it), skips noted."""
    found = corpus.load_features(manifest, logmel)
    if found.warning():
        say(f"{part}: {found.warning()}")
    return found


def load_part(manifest: Path, logmel: audio.LogMel, part: str) -> tuple[list, list[str]]:
    """Features and transcripts of a manifest's usable files (cached beside it)."""
    found = load_found(manifest, logmel, part)
    return found.features, found.transcripts


@dataclass
class Features:
    """How audio becomes the model's input: the log-mel settings and the training part's
    per-band mean and deviation (saved in the run as features.json)."""

    logmel: audio.LogMel
    mean: np.ndarray
    std: np.ndarray

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return audio.normalise(self.logmel(wave), self.mean, self.std)  # (T, F)

    def save(self, path: Path) -> None:
        row = {"logmel": dataclasses.asdict(self.logmel), "mean": self.mean.tolist()}
        write_json(path, {**row, "std": self.std.tolist()})

    @classmethod
    def load(cls, path: Path) -> Features:
        row = json.loads(Path(path).read_text())
        mean, std = (np.asarray(row[k], np.float32) for k in ("mean", "std"))
        return cls(audio.LogMel(**row["logmel"]), mean, std)


def pad(series: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, F) tensors -> (T, B, F) padded with zeros, and (B,) lengths."""
    return nn.utils.rnn.pad_sequence(series), torch.tensor([len(s) for s in series])


def spec_augment(series: list[torch.Tensor], config, seed: list[int]) -> list[torch.Tensor]:
    """Training utterances (T_i, F) with SpecAugment's masks (Park et al. 2019, section 2):
    ``freq_masks`` bands of up to ``freq_mask`` bands and ``time_masks`` spans of up to
    ``time_mask`` frames each set to 0, the mean of the normalised features. Departure: a
    span covers at most a fifth of its utterance (the paper's p), so a short digit is never
    masked whole. The masks are drawn from ``seed`` (the step's), so a resumed run draws the
    same ones."""
    if not (config.freq_masks or config.time_masks):
        return series
    rng, out = np.random.default_rng(seed), []
    for x in series:
        x, (T, F) = x.clone(), x.shape
        for _ in range(config.freq_masks):
            width = int(rng.integers(0, min(config.freq_mask, F) + 1))
            start = int(rng.integers(0, F - width + 1))
            x[:, start : start + width] = 0.0
        for _ in range(config.time_masks):
            width = int(rng.integers(0, min(config.time_mask, T // 5) + 1))
            start = int(rng.integers(0, T - width + 1))
            x[start : start + width] = 0.0
        out.append(x)
    return out


def bucketed_batch(step: int, lengths: list[int], batch_size: int, seed: int) -> list[int]:
    """The utterances of training step ``step``: a seeded shuffle per epoch, cut into groups
    of 20 batches, each group sorted by length before it is cut into batches (little padding,
    batches still mixed), the batches of a group in a seeded order."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    epoch, k = divmod(step, per_epoch)
    rng = np.random.default_rng([seed, epoch])
    order, group = rng.permutation(len(lengths)), 20 * batch_size
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group].tolist(), key=lambda i: lengths[i])
        cut = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [cut[j] for j in rng.permutation(len(cut))]
    return batches[k]
