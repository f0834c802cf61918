"""Text classification: many to one, a review in and its label out.

Tokens -> embedding, plus (``nb_features``, on by default) a linear projection of each
token's and bigram's Naive-Bayes log-count ratios (:mod:`rnnkit.tasks.classify_features`)
-> uni- or bidirectional recurrent layers -> pooling over the real steps
(:mod:`rnnkit.models.pooling`) -> dropout -> linear -> softmax over the classes
(:mod:`rnnkit.tasks.classify_model`). Data is a CSV/TSV table with a text and a label column,
or a named set (:mod:`rnnkit.tasks.classify_data`), split at random, once, by the seed into
training, validation and test parts.

Beside the recurrent model the run fits two classical baselines on the same training part,
TF-IDF + logistic regression and NB-LR (:mod:`rnnkit.tasks.classify_linear`), and keeps the
model of highest validation accuracy among the three and the mean of their probabilities
(:mod:`rnnkit.tasks.classify_select`; ``--model`` names one instead). The test report,
``rnnkit classify`` and ``rnnkit eval`` use the model kept, and report every candidate's
scores beside it.

Shape letters: T time (tokens), B batch, K classes, N texts.
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

from rnnkit.data.files import read_json, write_json
from rnnkit.data.pairs import UNK, TokenVocab, tokenize
from rnnkit.data.parts import part
from rnnkit.tasks import classify_features as features
from rnnkit.tasks import classify_linear as linear
from rnnkit.tasks import classify_select as select
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
from rnnkit.tasks.classify_model import (  # noqa: F401  (pad, pad_ratios: the tests')
    TextClassifier,
    encode,
    inputs,
    log_loss,
    pad,
    pad_ratios,
    probabilities,
)
from rnnkit.tasks.classify_pretrain import pretrain
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "classify"
SELECTION = "selection.json"  # the model kept and why, in the run directory


@dataclass
class Config(TrainConfig):
    """``rnnkit train classify``; the defaults train on the movie reviews.

    Picked by validation loss on the reviews from a short sweep (learning rate, weight decay,
    dropout, min_count, embedding size, pooling, label smoothing; one seed); the ratio
    inputs then by validation loss and accuracy on three seeds (docs/benchmarks.md). The
    named sets of ``data`` are in :mod:`rnnkit.data.textsets`; files may be compressed."""

    data: str = MOVIE_REVIEWS  # CSV/TSV, or a set: rotten_tomatoes, debates...
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
    baseline: bool = True  # also fit TF-IDF + LR and NB-LR on the same split, as candidates
    model: Literal["auto", "rnn", "tfidf", "nblr", "ensemble"] = "auto"  # kept (auto: best on val)
    lr: float = 4e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay (0.01 learned slower on the reviews)
    epochs: float = 3.0  # passes over the training part (validation loss rises after ~2)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: bf16 was slower here on CPU
    eval_every: int = 80  # evaluate on validation every this many steps
    pretrain_minutes: float = 0.0  # first train as a language model on unlabelled text (0: no)
    nb_features: bool = True  # token and bigram Naive-Bayes log-count ratios as inputs too
    nb_folds: int = 10  # training texts read ratios fitted on the other folds (1: on all)


# --- training ---


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


def build_task(config: Config, classes, vocab, parts, baselines, ratios) -> Task:
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
    if config.class_weights == "balanced":
        weights = confusion.balanced_weights(train_y, len(classes))
        model.class_weights = torch.tensor(weights, dtype=torch.float)
    val = inputs(parts["val"].texts, vocab, config, ratios)
    val_baselines = {k: b.probabilities(parts["val"].texts) for k, b in baselines.items()}

    def batch(step, rank, size):
        rows = part(epoch_batch(step, len(train_ids), config.batch_size, config.seed), rank, size)
        ids, lengths = pad([train_ids[i] for i in rows])  # (T, B), (B,)
        seed = [config.seed, step] if size == 1 else [config.seed, step, rank]  # own masks
        dropped = drop_words(ids, config.word_dropout, seed)
        if train_ratios is None:
            return dropped, lengths, train_y[rows]
        steps = pad_ratios([train_ratios[i] for i in rows])  # (T, B, F)
        steps[dropped != ids] = 0.0  # a word dropped to <unk> takes its ratios with it
        return dropped, lengths, train_y[rows], steps

    def evaluate(m, world):
        return split_metrics(m, *val, parts["val"].labels, len(classes), val_baselines, world)

    return Task(model, batch, evaluate, math.ceil(len(train_ids) / config.batch_size))


def split_metrics(model, encoded, ratios, labels, classes, baseline_probs, world=ALONE) -> dict:
    """The recurrent model's validation loss, accuracy and macro-F1, the baselines' beside;
    under torchrun each process scores its share of the texts."""

    def scored(rows: list[int]) -> np.ndarray:  # (len(rows), K)
        some = None if ratios is None else [ratios[i] for i in rows]
        return probabilities(model, [encoded[i] for i in rows], some)

    probs = np.array(world.map(scored, range(len(encoded))))  # (N, K)
    row = {"val_loss": log_loss(probs, labels)}
    row.update(confusion.scores(labels, probs.argmax(1), classes, "val_"))
    for name, p in baseline_probs.items():
        row[f"val_{name}_accuracy"] = select.accuracy_of(p, labels)
    return row


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or continue) the run in ``config.out``, fit the baselines, keep the best model
    on validation and score it on the test part."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out = str(run_dir)
    if config.model not in ("auto", "rnn") and not config.baseline:
        raise ValueError(f"--model {config.model} is a baseline: drop --no-baseline")
    classes, parts = prepare(config)
    if resume:
        vocab = TokenVocab.load(run_dir / "vocab.json")
    else:
        texts = [tokenize(t, config.tokens) for t in parts["train"].texts]
        vocab = TokenVocab.build(texts, config.min_count)
        if config.max_vocab:  # built most frequent first: keep the commonest
            vocab = TokenVocab(vocab.tokens[: config.max_vocab])
    ratios = fit_ratios(config, classes, vocab, parts["train"]) if config.nb_features else None
    baselines = fit_baselines(parts, len(classes)) if config.baseline else {}
    task = build_task(config, classes, vocab, parts, baselines, ratios)
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
    for kind, baseline in baselines.items():  # refitted the same on resume
        baseline.save(run_dir / linear.file_name(kind))
    trainer.fit()
    if trainer.world.rank == 0 and (run_dir / MODEL_FILE).exists():  # one process tests
        choose_model(run_dir, config, parts["val"])
        trainer.progress.line(test_report(run_dir, classes, parts["test"]))
    return trainer


def fit_ratios(config: Config, classes, vocab, train_part: Examples):
    """Naive-Bayes ratios of the whole training part (the same in a resumed run)."""
    train_ids = encode(train_part.texts, vocab, config)
    return features.NaiveBayesRatios.fit(train_ids, train_part.labels, len(classes), len(vocab))


def fit_baselines(parts: dict[str, Examples], classes: int) -> dict:
    """TF-IDF + LR and NB-LR fitted on the training part, C picked on validation."""
    train_part, val = parts["train"], parts["val"]
    return {
        kind: linear.fit(kind, train_part.texts, train_part.labels, val.texts, val.labels, classes)
        for kind in linear.KINDS
    }


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


def choose_model(run_dir: Path, config: Config, val: Examples) -> dict:
    """Choose among the best recurrent weights, the baselines and their ensemble on the
    validation part; write the choice to selection.json and print it."""
    alone = models_alone(run_dir, val.texts)
    members = select.ensemble_members(alone, val.labels)
    probs = select.candidates(alone.pop("rnn"), alone, members)
    model, why = select.choose(probs, val.labels, config.model)
    choice = {"model": model, "reason": why, "ensemble": members}
    write_json(run_dir / SELECTION, choice, indent=2)
    print(f"model kept: {model}, {why}", file=sys.stderr)
    return choice


def test_report(run_dir: Path, classes: list[str], test: Examples) -> str:
    """Score the model kept on the test part, every candidate beside; write test.json and
    confusion.png."""
    choice = read_json(run_dir / SELECTION)
    _, probs = scored(run_dir, test.texts)
    kept = probs[choice["model"]]
    result = {"model": choice["model"], "model_reason": choice["reason"]}
    result.update({"test_examples": len(test.labels), "test_loss": log_loss(kept, test.labels)})
    result.update(confusion.scores(test.labels, kept.argmax(1), len(classes), "test_"))
    result.update(select.report(probs, test.labels, len(classes), "test_"))
    write_json(run_dir / "test.json", result, indent=2)
    matrix = confusion.confusion_matrix(test.labels, kept.argmax(1), len(classes))
    title = f"test split, {choice['model']}"
    confusion.plot_confusion(matrix, classes, run_dir / "confusion.png", title)
    return format_eval(result)


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "cpu"):
    """The config, vocabulary, class names, Naive-Bayes ratios (None if the run has none) and
    best recurrent model of a run directory."""
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


def selection(run_dir: Path) -> dict:
    """The model a run keeps and the ensemble's members: selection.json's, or the recurrent
    model in a run without one."""
    path = Path(run_dir) / SELECTION
    return read_json(path) if path.exists() else {"model": "rnn", "ensemble": []}


def kept_model(run_dir: Path) -> str:
    return selection(run_dir)["model"]


def models_alone(run_dir: Path, texts: list[str], device="cpu") -> dict[str, np.ndarray]:
    """(N, K) probabilities of ``texts`` by the recurrent model and each saved baseline."""
    config, vocab, classes, ratios, model = load_run(run_dir, device)
    probs = {"rnn": probabilities(model, *inputs(texts, vocab, config, ratios))}
    for kind in linear.KINDS:
        path = Path(run_dir) / linear.file_name(kind)
        if config.baseline and path.exists():
            probs[kind] = linear.LinearBaseline.load(path).probabilities(texts)
    return probs


def scored(run_dir: Path, texts: list[str], device="cpu") -> tuple[list[str], dict]:
    """The class names and every candidate's (N, K) probabilities of ``texts``."""
    classes = read_json(Path(run_dir) / "classes.json", list)
    alone = models_alone(run_dir, texts, device)
    return classes, select.candidates(alone.pop("rnn"), alone, selection(run_dir)["ensemble"])


def classify(run_dir: Path, text: str = "", file: str = "", out: str = "", device="cpu") -> None:
    """Print the label of ``text``, or write one row per text of ``file`` into ``out``."""
    if not file:
        classes, probs = scored(run_dir, [text], device)
        kept = probs[kept_model(run_dir)][0]
        ranked = sorted(zip(classes, kept, strict=True), key=lambda kv: -kv[1])
        print(f"{ranked[0][0]}\t" + "  ".join(f"{name} {p:.3f}" for name, p in ranked))
        return
    config = run_config(Path(run_dir), Config)
    texts = read_texts(Path(file), config)
    classes, probs = scored(run_dir, texts, device)
    probs = probs[kept_model(run_dir)]
    with open(out or "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        column = "text" if Path(file).suffix == ".txt" else config.text_column
        writer.writerow([column, "predicted", *(f"p_{name}" for name in classes)])
        for text, p in zip(texts, probs, strict=True):
            writer.writerow([text, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)])
    print(f"wrote {len(texts)} predictions to {out or 'predictions.csv'}", file=sys.stderr)


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss, accuracy and macro-F1 of the model a run keeps on a labelled table, every
    candidate's accuracy and macro-F1 beside them."""
    config = run_config(Path(run_dir), Config)
    classes = read_json(Path(run_dir) / "classes.json", list)
    path, texts, labels, lines = read_labelled(config, data)
    check_seen(path, "evaluation", labels, lines, set(classes))
    y = [classes.index(s) for s in labels]
    _, probs = scored(run_dir, texts, device)
    model = kept_model(run_dir)
    result = {"model": model, "examples": len(y), "loss": log_loss(probs[model], y)}
    result.update(confusion.scores(y, probs[model].argmax(1), len(classes)))
    result.update(select.report(probs, y, len(classes), ""))
    matrix = confusion.confusion_matrix(y, probs[model].argmax(1), len(classes))
    confusion.plot_confusion(matrix, classes, Path(run_dir) / "confusion-eval.png", str(path))
    return result


def format_eval(result: dict) -> str:
    """One line: every score, the candidates' beside the kept model's."""
    return " | ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )
