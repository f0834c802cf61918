"""Text classification: many to one, a review in and its label out.

Tokens -> embedding, plus (``nb_features``, on by default) a linear projection of each
token's and bigram's Naive-Bayes log-count ratios (:mod:`rnnkit.tasks.classify_features`)
-> uni- or bidirectional recurrent layers -> pooling over the real steps
(:mod:`rnnkit.models.pooling`) -> dropout -> linear -> softmax over the classes. Data is a CSV/TSV
table with a text and a label column (:mod:`rnnkit.tasks.classify_data`), split at random,
once, by the seed into training, validation and test parts. A TF-IDF (words and bigrams) +
logistic-regression baseline is fitted once on the same training part; every evaluation
prints its accuracy on the same validation texts beside the model's, and the final test
report (and ``rnnkit eval``) beside the model's test scores.

Shape letters: T time (tokens), B batch, E embedding size, H hidden size, D directions,
K classes, F ratio features per step.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data.files import read_json
from rnnkit.data.pairs import UNK, TokenVocab, tokenize
from rnnkit.models.pooling import pool
from rnnkit.tasks import classify_features as features
from rnnkit.tasks import confusion, default_run_dir, run_config
from rnnkit.tasks.classify_data import (  # noqa: F401  (split_rows: the tests')
    MOVIE_REVIEWS,
    Examples,
    check_seen,
    prepare,
    read_labelled,
    read_texts,
    split_rows,
    unlabelled_texts,
)
from rnnkit.tasks.classify_pretrain import pretrain
from rnnkit.training import config as configuration
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "classify"


@dataclass
class Config(TrainConfig):
    """``rnnkit train classify``; the defaults train on the movie reviews.

    Picked by validation loss on the reviews from a short sweep (learning rate, weight decay,
    dropout, min_count, embedding size, pooling, label smoothing; one seed); the ratio
    inputs then by validation loss and accuracy on three seeds (docs/benchmarks.md)."""

    data: str = MOVIE_REVIEWS  # CSV/TSV (may be .gz/.bz2/.xz/.zip) or rotten_tomatoes
    text_column: str = "text"  # name or 1-based position of the column holding the text
    label_column: str = "label"  # name or 1-based position of the column holding the label
    header: Literal["auto", "yes", "no"] = "auto"  # is the first line column names? (auto: tell)
    test: str = ""  # a labelled file for the final test, in place of --test-fraction's rows
    labels: str = ""  # comma-separated labels to keep, other rows dropped (empty: all)
    tokens: Literal["word", "char"] = "word"  # word or character tokens
    min_count: int = 2  # keep tokens seen at least this often in training
    max_vocab: int = 50_000  # at most this many tokens in the vocabulary (0: no limit)
    max_tokens: int = 400  # cut texts after this many tokens
    cell: Literal["lstm", "gru", "rnn"] = "lstm"  # recurrent cell
    embedding: int = 200  # embedding size
    hidden: int = 128  # hidden units per layer and direction
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = True  # read the text both ways
    pooling: Literal["last", "mean", "max"] = "mean"  # one vector per text, over real steps
    dropout: float = 0.3  # dropout on embeddings, between layers and before the classifier
    word_dropout: float = 0.0  # share of training tokens replaced by <unk> (Iyyer et al. 2015)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n / (K n_k) per class
    label_smoothing: float = 0.0  # training targets (1 - e) one-hot + e / K (Szegedy et al. 2016)
    batch_size: int = 64  # texts per training step
    val_fraction: float = 0.1  # share of the rows for validation
    test_fraction: float = 0.1  # share of the rows for the final test (without --test)
    baseline: bool = True  # also score TF-IDF + logistic regression on the same split
    lr: float = 4e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay (0.01 learned slower on the reviews)
    epochs: float = 3.0  # passes over the training part (validation loss rises after ~2)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: bf16 was slower here on CPU
    eval_every: int = 80  # evaluate on validation every this many steps
    pretrain_minutes: float = 0.0  # first train as a language model on unlabelled text (0: no)
    nb_features: bool = True  # token and bigram Naive-Bayes log-count ratios as inputs too
    nb_folds: int = 10  # training texts read ratios fitted on the other folds (1: on all)


# --- tokens ---


def encode(texts: list[str], vocab: TokenVocab, config: Config) -> list[list[int]]:
    """Token indices per text, cut at ``max_tokens``; an empty text is one unknown token."""
    return [vocab.encode(tokenize(t, config.tokens)[: config.max_tokens]) or [UNK] for t in texts]


def pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index lists -> (T, B) padded with 0, and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in sequences])
    ids = torch.zeros(int(lengths.max()), len(sequences), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[: len(s), b] = torch.tensor(s)
    return ids, lengths


def pad_ratios(ratios: list[np.ndarray]) -> torch.Tensor:
    """(T_i, F) arrays -> (T, B, F) padded with 0."""
    out = torch.zeros(max(len(r) for r in ratios), len(ratios), ratios[0].shape[1])
    for b, r in enumerate(ratios):
        out[: len(r), b] = torch.from_numpy(r)
    return out


def inputs(texts: list[str], vocab, config: Config, ratios) -> tuple[list, list | None]:
    """Token indices per text and, with a ratio table, each text's (T, F) ratios."""
    encoded = encode(texts, vocab, config)
    return encoded, None if ratios is None else ratios.features(encoded)


def drop_words(ids: torch.Tensor, rate: float, seed: list[int]) -> torch.Tensor:
    """Word dropout (Iyyer et al. 2015, section 3.1, who drop whole words; here they become
    <unk>): each real token of a training batch is <unk> with probability ``rate``, drawn
    from ``seed`` so that a resumed run sees the same batches."""
    if rate == 0:
        return ids
    draw = torch.from_numpy(np.random.default_rng(seed).random(ids.shape))  # (T, B)
    return ids.masked_fill((draw < rate) & (ids != 0), UNK)


def epoch_batch(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The rows of training step ``step``: a fresh seeded shuffle each epoch, then slices."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size : (k + 1) * batch_size]


# --- model ---


class TextClassifier(nn.Module):
    """Embedding (+ projected ratios) -> recurrent layers -> pooling -> dropout -> linear;
    returns logits (B, K)."""

    def __init__(self, vocab_size: int, classes: int, config: Config):
        super().__init__()
        self.pooling, self.directions = config.pooling, 2 if config.bidirectional else 1
        self.embed = nn.Embedding(vocab_size, config.embedding, padding_idx=0)
        self.ratios = None  # (F -> E): the ratios enter the layer through the embedding space
        if config.nb_features:
            size = features.feature_size(classes)
            self.ratios = nn.Linear(size, config.embedding, bias=False)
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = rnnkit.layers.make_layer(
            config.cell, config.embedding, config.hidden, num_layers=config.layers,
            dropout=between, bidirectional=config.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, classes)

    def represent(self, ids: torch.Tensor, lengths: torch.Tensor, ratios=None) -> torch.Tensor:
        """(T, B) token indices, (B,) lengths and (T, B, F) ratios -> (B, D*H), one vector per
        text. Without ``ratios`` (as an exported model runs) they count as zeros."""
        x = self.drop(self.embed(ids))  # (T, B, E)
        if self.ratios is not None and ratios is not None:
            x = x + self.ratios(ratios)  # (T, B, F) -> (T, B, E)
        output, _ = self.rnn(x, lengths=lengths)  # (T, B, D*H)
        return pool(output, lengths, self.pooling, self.directions)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, ratios=None) -> torch.Tensor:
        return self.head(self.drop(self.represent(ids, lengths, ratios)))  # (B, K)


@torch.no_grad()
def probabilities(model: TextClassifier, encoded: list[list[int]], ratios=None, batch_size=256):
    """(N, K) class probabilities, texts scored in batches of similar length."""
    device, out = model.head.weight.device, np.zeros((len(encoded), model.head.out_features))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, lengths = pad([encoded[i] for i in rows])
        steps = None if ratios is None else pad_ratios([ratios[i] for i in rows]).to(device)
        logits = model(ids.to(device), lengths.to(device), steps)
        out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def log_loss(probs: np.ndarray, labels: list[int]) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


# --- training ---


def build_task(config: Config, classes, vocab, parts, baseline, ratios) -> Task:
    torch.manual_seed(config.seed)
    model = TextClassifier(len(vocab), len(classes), config)
    train_ids = encode(parts["train"].texts, vocab, config)
    train_ratios = None
    if ratios is not None:  # each training text read with ratios of the other folds
        train_ratios = features.cross_fitted(
            train_ids, parts["train"].labels, len(classes), len(vocab), config.nb_folds,
            config.seed,
        )  # fmt: skip
    train_y = torch.tensor(parts["train"].labels)
    weights = None
    if config.class_weights == "balanced":
        weights = torch.tensor(confusion.balanced_weights(train_y, len(classes)), dtype=torch.float)
    val = inputs(parts["val"].texts, vocab, config, ratios)
    baseline_val = baseline(parts["val"].texts) if baseline else None

    def batch(step):
        rows = epoch_batch(step, len(train_ids), config.batch_size, config.seed)
        ids, lengths = pad([train_ids[i] for i in rows])  # (T, B), (B,)
        dropped = drop_words(ids, config.word_dropout, [config.seed, step])
        if train_ratios is None:
            return dropped, lengths, train_y[rows]
        steps = pad_ratios([train_ratios[i] for i in rows])  # (T, B, F)
        steps[dropped != ids] = 0.0  # a word dropped to <unk> takes its ratios with it
        return dropped, lengths, train_y[rows], steps

    def loss(m, b, carry):
        device = m.head.weight.device
        ids, lengths, y, *steps = (t.to(device) for t in b)
        w = None if weights is None else weights.to(device)
        logits = m(ids, lengths, *steps).float()
        loss = F.cross_entropy(logits, y, weight=w, label_smoothing=config.label_smoothing)
        return loss, None, int(lengths.sum())

    def evaluate(m):
        return split_metrics(m, *val, parts["val"].labels, len(classes), baseline_val, "val_")

    return Task(model, batch, loss, evaluate, math.ceil(len(train_ids) / config.batch_size))


def split_metrics(model, encoded, ratios, labels, classes, baseline_pred, prefix) -> dict:
    probs = probabilities(model, encoded, ratios)
    row = {f"{prefix}loss": log_loss(probs, labels)}
    row.update(confusion.scores(labels, probs.argmax(1), classes, prefix))
    if baseline_pred is not None:
        baseline = confusion.scores(labels, baseline_pred, classes)
        row[f"{prefix}baseline_accuracy"] = baseline["accuracy"]
    return row


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or continue) the run in ``config.out``, then score the best model on the test part."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out = str(run_dir)
    classes, parts = prepare(config)
    if resume:
        vocab = TokenVocab.load(run_dir / "vocab.json")
    else:
        texts = [tokenize(t, config.tokens) for t in parts["train"].texts]
        vocab = TokenVocab.build(texts, config.min_count)
        if config.max_vocab:  # built most frequent first: keep the commonest
            vocab = TokenVocab(vocab.tokens[: config.max_vocab])
    ratios = fit_ratios(config, classes, vocab, parts["train"]) if config.nb_features else None
    baseline = None
    if config.baseline:
        baseline = fit_baseline(parts)
    task = build_task(config, classes, vocab, parts, baseline, ratios)
    if config.pretrain_minutes > 0 and not resume:
        pretrain_model(task.model, unlabelled_texts(config, parts), vocab, config)
    trainer = Trainer(config, task, run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        vocab.save(run_dir / "vocab.json")
        if ratios is not None:
            ratios.save(run_dir / features.FILE)
        (run_dir / "classes.json").write_text(json.dumps(classes) + "\n")
    trainer.fit()
    if (run_dir / MODEL_FILE).exists():
        report = test_report(run_dir, config, classes, vocab, parts["test"], baseline, ratios)
        trainer.progress.line(report)
    return trainer


def fit_ratios(config: Config, classes, vocab, train_part: Examples):
    """Naive-Bayes ratios of the whole training part (the same in a resumed run)."""
    train_ids = encode(train_part.texts, vocab, config)
    return features.NaiveBayesRatios.fit(train_ids, train_part.labels, len(classes), len(vocab))


def fit_baseline(parts: dict[str, Examples]):
    """TF-IDF + logistic regression fitted on the training part, C picked on validation."""
    train_part, val = parts["train"], parts["val"]
    return features.fit_baseline(train_part.texts, train_part.labels, val.texts, val.labels)


def pretrain_model(model: TextClassifier, texts: list[str], vocab, config: Config) -> dict:
    """Dai & Le (2015)'s semi-supervised start: the embedding and recurrent layer first learn
    to predict the neighbouring words of unlabelled texts
    (:mod:`rnnkit.tasks.classify_pretrain`)."""
    sequences = encode(texts, vocab, config)
    model.to(pick_device(config.device))
    result = pretrain(
        model.embed, model.rnn, sequences, config.pretrain_minutes, batch_size=config.batch_size,
        lr=config.lr, dropout=config.dropout, seed=config.seed,
    )  # fmt: skip
    say = f"{result['steps']} steps, loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
    print(f"pretrained on {len(sequences)} unlabelled texts: {say}", file=sys.stderr)
    return result


def test_report(run_dir, config, classes, vocab, test: Examples, baseline, ratios) -> str:
    """Score the best weights on the test part; write test.json and confusion.png."""
    model = TextClassifier(len(vocab), len(classes), config)
    load_model(model, run_dir / MODEL_FILE)
    probs = probabilities(model.eval(), *inputs(test.texts, vocab, config, ratios))
    matrix = confusion.confusion_matrix(test.labels, probs.argmax(1), len(classes))
    result = {"test_examples": len(test.labels), "test_loss": log_loss(probs, test.labels)}
    result.update(confusion.scores(test.labels, probs.argmax(1), len(classes), "test_"))
    if baseline is not None:
        scored = confusion.scores(test.labels, baseline(test.texts), len(classes), "baseline_")
        result.update({f"test_{k}": v for k, v in scored.items()})
    (run_dir / "test.json").write_text(json.dumps(result, indent=2) + "\n")
    confusion.plot_confusion(matrix, classes, run_dir / "confusion.png", "test split")
    return format_eval(result)


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "cpu"):
    """The config, vocabulary, class names, Naive-Bayes ratios (None if the run has none) and
    best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    vocab = TokenVocab.load(run_dir / "vocab.json")
    classes = read_json(run_dir / "classes.json", list)
    ratios = None
    if config.nb_features:
        ratios = features.NaiveBayesRatios.load(run_dir / features.FILE)
    model = TextClassifier(len(vocab), len(classes), config)
    load_model(model, run_dir / MODEL_FILE)
    return config, vocab, classes, ratios, model.to(pick_device(device)).eval()


def classify(run_dir: Path, text: str = "", file: str = "", out: str = "", device="cpu") -> None:
    """Print the label of ``text``, or write one row per text of ``file`` into ``out``."""
    config, vocab, classes, ratios, model = load_run(run_dir, device)
    if not file:
        probs = probabilities(model, *inputs([text], vocab, config, ratios))[0]
        ranked = sorted(zip(classes, probs, strict=True), key=lambda kv: -kv[1])
        print(f"{ranked[0][0]}\t" + "  ".join(f"{name} {p:.3f}" for name, p in ranked))
        return
    texts = read_texts(Path(file), config)
    probs = probabilities(model, *inputs(texts, vocab, config, ratios))
    with open(out or "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        column = "text" if Path(file).suffix == ".txt" else config.text_column
        writer.writerow([column, "predicted", *(f"p_{name}" for name in classes)])
        for text, p in zip(texts, probs, strict=True):
            writer.writerow([text, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)])
    print(f"wrote {len(texts)} predictions to {out or 'predictions.csv'}", file=sys.stderr)


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss, accuracy and macro-F1 of a run on a labelled table, the baseline beside them."""
    config, vocab, classes, ratios, model = load_run(run_dir, device)
    path, texts, labels, lines = read_labelled(config, data)
    check_seen(path, "evaluation", labels, lines, set(classes))
    y = [classes.index(s) for s in labels]
    probs = probabilities(model, *inputs(texts, vocab, config, ratios))
    result = {"examples": len(y), "loss": log_loss(probs, y)}
    result.update(confusion.scores(y, probs.argmax(1), len(classes)))
    matrix = confusion.confusion_matrix(y, probs.argmax(1), len(classes))
    confusion.plot_confusion(matrix, classes, Path(run_dir) / "confusion-eval.png", str(path))
    if config.baseline:
        baseline = fit_baseline(prepare(config)[1])
        result["baseline_accuracy"] = confusion.scores(y, baseline(texts), len(classes))["accuracy"]
    return result


def format_eval(result: dict) -> str:
    """One line: every score, the baseline's beside the model's."""
    return " | ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )
