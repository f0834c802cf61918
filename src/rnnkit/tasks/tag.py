"""Per-step tagging: a label for every step of a sequence (many to many).

Features -> (bidirectional) recurrent layers -> linear -> a class per step. Sequences of
different lengths share a batch through padding: the layers leave padded outputs at zero
and start the reverse direction at each sequence's own last step, and the loss below counts
real steps only, so what sits in the padding changes nothing.

Data (:mod:`rnnkit.data.regimes`): the generated regime-switching signal, or an ``.npz``
file. Sequences are split into train, validation and test by a seeded shuffle (they are
independent sequences, not one series cut in time); per-feature standardisation is fitted
on the training steps only. After training the run holds ``test_metrics.json`` (per-step
accuracy beside the majority-class baseline) and ``timeline.png`` (a test sequence with its
true and predicted labels).

Shape letters: T time, B batch, F features, H hidden size, D directions, K classes.
"""

from __future__ import annotations

import time
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
from rnnkit.data.regimes import REGIMES, TagDataError, Tagged, load_tagged
from rnnkit.data.series import Scaler
from rnnkit.models.loss import Loss
from rnnkit.tasks import run_config
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "tag"
DATA_SEED = 0  # seed of the generated regimes a run trains on; eval draws a fresh sample


@dataclass
class Config(TrainConfig):
    """``rnnkit train tag``; the defaults learn the generated regimes in about a minute."""

    data: str = "regimes"  # "regimes" (generated) or an .npz file (see rnnkit.data.regimes)
    sequences: int = 600  # how many sequences "regimes" generates
    cell: Literal["lstm", "gru", "rnn", "peephole"] = "lstm"  # recurrent cell
    hidden: int = 64  # hidden units per layer and direction
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = True  # read each sequence both ways (a tag may depend on what follows)
    dropout: float = 0.0  # dropout between layers and before the output layer
    batch_size: int = 32  # sequences per training step
    val_fraction: float = 0.15  # sequences held out for validation
    test_fraction: float = 0.15  # sequences held out for the final test
    lr: float = 5e-3  # peak learning rate
    warmup: int = 20  # steps of linear warm-up from 0 to lr
    minutes: float = 1.0  # stop after this much training time (0: no limit)
    eval_every: int = 100  # evaluate on validation every this many steps


class Tagger(nn.Module):
    """Recurrent layers over the features, then a linear layer per step; returns logits."""

    def __init__(self, features: int, classes: int, config: Config):
        super().__init__()
        directions = 2 if config.bidirectional else 1
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = rnnkit.layers.make_layer(
            config.cell,
            features,
            config.hidden,
            num_layers=config.layers,
            dropout=between,
            bidirectional=config.bidirectional,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(directions * config.hidden, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (T, B, F) padded, lengths (B,) -> logits (T, B, K)."""
        output, _ = self.rnn(x, lengths=lengths)  # (T, B, D*H), zero past each length
        return self.head(self.drop(output))  # (T, B, K)

    def loss(self, batch, carry=None) -> Loss:
        """Cross-entropy summed over the real steps of a batch (x, labels, lengths)."""
        x, y, lengths = (t.to(self.head.weight.device) for t in batch)
        steps = int(lengths.sum())
        return Loss(masked_loss(self(x, lengths), y, lengths) * steps, steps, steps)


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(T, B) True at real steps, False at padding."""
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor):
    """Mean cross-entropy over the real steps of the batch; padded steps weigh nothing."""
    T, B, K = logits.shape
    mask = step_mask(lengths.to(logits.device), T)  # (T, B)
    per_step = F.cross_entropy(
        logits.float().reshape(T * B, K), labels.reshape(T * B), reduction="none"
    ).view(T, B)
    return (per_step * mask).sum() / mask.sum()


# --- data: classes, scaling, batches ---


@dataclass
class Prepared:
    """Sequences as tensors, split, with the classes and the scaler of the training part."""

    classes: list  # label values; a step's class index is its position here
    scaler: Scaler  # fitted on the training steps only
    train: list  # (x (T, F), y (T,)) tensor pairs
    val: list
    test: list


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int, name=""):
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    if n - n_test - n_val < 1 or n_val < 1 or n_test < 1:
        raise TagDataError(
            f"{name or 'the data'}: {n} sequences are too few to train, validate (which picks "
            f"the best model) and test with val_fraction {val_fraction} and test_fraction "
            f"{test_fraction}"
        )
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def encode(data: Tagged, index, classes: list, scaler: Scaler, part: str) -> list:
    lookup = {c: i for i, c in enumerate(classes)}
    pairs = []
    for i in index:
        unseen = sorted(set(np.unique(data.labels[i]).tolist()) - set(lookup))
        if unseen:
            raise TagDataError(
                f"{data.name}: sequence {i} ({part}) has label(s) {unseen} never seen in "
                f"training; the classes are {classes}"
            )
        x = torch.tensor(scaler.transform(data.inputs[i]), dtype=torch.float32)
        y = torch.tensor([lookup[v] for v in data.labels[i].tolist()])
        pairs.append((x, y))
    return pairs


def prepare(config: Config, data: Tagged | None = None) -> Prepared:
    """Load (or take) the data, split it, fit the scaler on training steps, encode labels.
    The data and the split have their own fixed seeds, so runs with different ``--seed``
    (initialisation and batch order) share one test set."""
    data = data or load_tagged(config.data, DATA_SEED, config.sequences)
    fractions = (config.val_fraction, config.test_fraction)
    train, val, test = split_indices(len(data), *fractions, 1, data.name)
    classes = sorted(set(np.concatenate([data.labels[i] for i in train]).tolist()))
    scaler = Scaler.fit(np.concatenate([data.inputs[i] for i in train]).astype(np.float64))
    return Prepared(
        classes,
        scaler,
        encode(data, train, classes, scaler, "training"),
        encode(data, val, classes, scaler, "validation"),
        encode(data, test, classes, scaler, "test"),
    )


def pad_batch(pairs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(x (T_i, F), y (T_i,))] -> x (T, B, F), y (T, B), lengths (B,); padding is zero."""
    lengths = torch.tensor([len(y) for _, y in pairs])
    x = nn.utils.rnn.pad_sequence([x for x, _ in pairs])  # (T, B, F)
    y = nn.utils.rnn.pad_sequence([y for _, y in pairs])  # (T, B)
    return x, y, lengths


def batch_at(pairs: list, step: int, batch_size: int, seed: int, rank: int = 0, size: int = 1):
    """The batch of training step ``step``: a fresh seeded shuffle each epoch, so resuming
    at a step reads the same batch; under torchrun, process ``rank``'s part of it."""
    per_epoch = max(len(pairs) // batch_size, 1)
    epoch, slot = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
    chosen = part(order[slot * batch_size : (slot + 1) * batch_size], rank, size)
    return pad_batch([pairs[i] for i in chosen])


@torch.no_grad()
def score(model: Tagger, pairs: list, batch_size: int = 64, world=ALONE) -> dict:
    """Masked loss and per-step accuracy over ``pairs``, weighted by real steps; under
    torchrun each process scores its share of the batches."""
    device, loss, correct, steps = model.head.weight.device, 0.0, 0, 0
    for start in world.share(range(0, len(pairs), batch_size)):
        x, y, lengths = (t.to(device) for t in pad_batch(pairs[start : start + batch_size]))
        logits = model(x, lengths)
        mask = step_mask(lengths, x.shape[0])
        real = int(mask.sum())
        loss += masked_loss(logits, y, lengths).item() * real
        correct += int(((logits.argmax(-1) == y) & mask).sum())
        steps += real
    loss, correct, steps = world.sum(loss, correct, steps)
    return {"loss": loss / steps, "accuracy": correct / steps, "steps": int(steps)}


# --- training ---


def build_task(config: Config, prepared: Prepared) -> Task:
    torch.manual_seed(config.seed)
    features = prepared.train[0][0].shape[1]
    model = Tagger(features, len(prepared.classes), config)

    def evaluate(m, world):
        r = score(m, prepared.val, world=world)
        return {"val_loss": r["loss"], "val_accuracy": r["accuracy"]}

    def batch(step, rank, size):
        return batch_at(prepared.train, step, config.batch_size, config.seed, rank, size)

    per_epoch = max(len(prepared.train) // config.batch_size, 1)
    return Task(model, batch, evaluate, per_epoch, "steps", "loss (nats per step)")


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or continue) the run in ``config.out``; then test it and draw a timeline."""
    run_dir = Path(config.out or Path("runs") / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}")
    config.out = str(run_dir)
    prepared = prepare(config)
    trainer = Trainer(config, build_task(config, prepared), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        save_labels(run_dir, prepared)
    trainer.fit()
    if trainer.world.rank == 0 and not trainer.interrupted:  # one process tests
        finish(run_dir, prepared, trainer.progress.line)
    return trainer


def save_labels(run_dir: Path, prepared: Prepared) -> None:
    state = {"classes": prepared.classes, "scaler": prepared.scaler.to_dict()}
    write_json(run_dir / "labels.json", state, indent=2)


def finish(run_dir: Path, prepared: Prepared, say=print) -> dict:
    """Test the best model, write test_metrics.json and timeline.png; return the metrics."""
    config, classes, _, model = load_run(run_dir, "cpu")
    result = score(model, prepared.test)
    train_labels = torch.cat([y for _, y in prepared.train])
    test_labels = torch.cat([y for _, y in prepared.test])
    majority = int(torch.bincount(train_labels).argmax())
    result["majority_accuracy"] = float((test_labels == majority).float().mean())
    write_json(run_dir / "test_metrics.json", result, indent=2)
    x, y = prepared.test[0]
    predicted = model(x[:, None], torch.tensor([len(y)]))[:, 0].argmax(-1)
    plot_timeline(run_dir / "timeline.png", x[:, 0].numpy(), y.numpy(), predicted.numpy(), classes)
    say(
        f"test: per-step accuracy {result['accuracy']:.4f} (majority class "
        f"{result['majority_accuracy']:.4f}) over {result['steps']} steps; "
        f"{run_dir / 'timeline.png'}"
    )
    return result


def class_names(classes: list) -> list[str]:
    """The regimes' names for the generated data's integer labels, else the labels."""
    if classes == list(range(len(REGIMES))):
        return list(REGIMES)
    return [str(c) for c in classes]


def plot_timeline(path: Path, signal, true, predicted, classes: list) -> None:
    """The signal on top; below it, the true and predicted label of every step as colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4), sharex=True, height_ratios=[2, 1])
    top.plot(signal, linewidth=0.8)
    top.set(ylabel="first feature (scaled)")
    top.set_title("per-step tagging: a test sequence", loc="left")
    colours = plt.get_cmap("tab10", max(len(classes), 2))
    rows = np.stack([true, predicted])  # (2, T)
    bottom.imshow(
        rows, aspect="auto", cmap=colours, vmin=-0.5, vmax=colours.N - 0.5, interpolation="nearest"
    )
    bottom.set(yticks=[0, 1], yticklabels=["true", "predicted"], xlabel="step")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i)) for i in range(len(classes))]
    fig.legend(handles, class_names(classes), loc="upper right", ncol=len(classes), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "auto"):
    """The config, classes, scaler and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    state = read_json(run_dir / "labels.json")
    scaler = Scaler.from_dict(state["scaler"])
    model = Tagger(len(scaler.mean), len(state["classes"]), config)
    load_model(model, run_dir / MODEL_FILE)
    return config, state["classes"], scaler, model.to(pick_device(device)).eval()


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Masked loss and per-step accuracy of a run on every sequence of ``data`` (an .npz
    file; "regimes" scores a fresh sample generated with another seed)."""
    config, classes, scaler, model = load_run(run_dir, device)
    tagged = load_tagged(data, DATA_SEED + 1, config.sequences)
    pairs = encode(tagged, range(len(tagged)), classes, scaler, "scored")
    result = score(model, pairs)
    return {**result, "sequences": len(pairs)}
