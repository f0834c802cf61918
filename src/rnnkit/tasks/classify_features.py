"""Bag-of-n-gram statistics for text classification, fitted on the training part only.

Naive-Bayes log-count ratios (Wang & Manning 2012, "Baselines and bigrams: simple, good
sentiment and topic classification", section 2.1). With ``p_k(f)`` the number of training
texts of class k that hold the n-gram f and ``q_k(f)`` the same count over the other
classes, and a = 1:

    r_k(f) = log((p_k(f) + a) / ||p_k + a||_1) - log((q_k(f) + a) / ||q_k + a||_1)

With two classes one ratio per n-gram (class 1 against class 0); with more, one per class,
each against the rest (their one-vs-rest). Wang & Manning scale the binary n-gram features
of a linear model by r; here the recurrent classifier reads, at each step, the ratio of the
token and the ratio of the bigram that the token ends, beside its embedding. Special tokens
(``<unk>`` among them), bigrams holding one, and n-grams never seen in training have ratio 0.

Departure: the ratios that a training text is read with are cross-fitted, computed from the
other folds of the training part only (as in stacking; Wolpert 1992). Ratios fitted on all
the training texts include each text's own label: a bigram seen once spells out the label of
its text, the model learns to trust the ratios, and on new text they do not hold (on the
movie reviews the validation loss doubled). Validation, test and new texts are read with the
ratios of the whole training part, which are saved in the run directory.

The TF-IDF + logistic-regression baseline is here too: the model's yardstick.

Shape letters: T time (tokens), V vocabulary, M bigrams, K classes, C ratio columns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.pairs import SPECIALS
from rnnkit.training.checkpoint import load_tensors, save_tensors

FILE = "nb_ratios.safetensors"  # the whole training part's ratios, in the run directory
SMOOTHING = 1.0  # Wang & Manning's alpha


def columns(classes: int) -> int:
    """Ratio columns: one for two classes, else one per class."""
    return 1 if classes == 2 else classes


def feature_size(classes: int) -> int:
    """Inputs per step: the token's ratios, then the bigram's."""
    return 2 * columns(classes)


def log_ratios(counts: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """(F, K) texts of each class holding each n-gram -> (F, C) log-count ratios."""
    seen = counts.sum(1) > 0  # the norms run over the n-grams of the training texts
    p = counts + alpha
    q = counts.sum(1, keepdims=True) - counts + alpha  # the other classes
    ratios = np.log(p / p[seen].sum(0)) - np.log(q / q[seen].sum(0))  # (F, K)
    ratios[~seen] = 0.0  # never seen: no evidence either way
    return ratios[:, 1:] if counts.shape[1] == 2 else ratios


@dataclass
class NaiveBayesRatios:
    """Log-count ratios of each token id and of each bigram of token ids seen in training."""

    unigram: np.ndarray  # (V, C) float32
    bigram: dict[tuple[int, int], np.ndarray]  # (C,) float32 per bigram

    @classmethod
    def fit(cls, sequences, labels, classes: int, vocab_size: int) -> NaiveBayesRatios:
        """Ratios from ``sequences`` (lists of token ids) and their class indices."""
        special = len(SPECIALS)  # ids below this are <pad>, <sos>, <eos>, <unk>
        unigram, bigram = np.zeros((vocab_size, classes)), defaultdict(lambda: np.zeros(classes))
        for ids, label in zip(sequences, labels, strict=True):
            for token in set(ids):
                unigram[token, label] += token >= special
            for pair in set(zip(ids[:-1], ids[1:], strict=True)):
                if min(pair) >= special:
                    bigram[pair][label] += 1
        pairs = sorted(bigram)
        counts = np.array([bigram[p] for p in pairs]).reshape(len(pairs), classes)  # (M, K)
        values = log_ratios(counts).astype(np.float32)
        return cls(log_ratios(unigram).astype(np.float32), dict(zip(pairs, values, strict=True)))

    def features(self, sequences) -> list[np.ndarray]:
        """Per text a (T, 2C) array: each token's ratios, then those of the bigram it ends."""
        size = self.unigram.shape[1]
        out = []
        for ids in sequences:
            steps = np.zeros((len(ids), 2 * size), dtype=np.float32)
            steps[:, :size] = self.unigram[ids]
            for t in range(1, len(ids)):
                ratio = self.bigram.get((ids[t - 1], ids[t]))
                if ratio is not None:
                    steps[t, size:] = ratio
            out.append(steps)
        return out

    def save(self, path: Path) -> None:
        pairs = sorted(self.bigram)
        tensors = {
            "unigram": torch.from_numpy(self.unigram),
            "bigram_pairs": torch.tensor(pairs, dtype=torch.long).reshape(len(pairs), 2),
            "bigram_ratios": torch.from_numpy(
                np.array([self.bigram[p] for p in pairs], dtype=np.float32).reshape(
                    len(pairs), self.unigram.shape[1]
                )
            ),
        }
        save_tensors(path, tensors, {})

    @classmethod
    def load(cls, path: Path) -> NaiveBayesRatios:
        tensors, _ = load_tensors(path)
        pairs = [tuple(p) for p in tensors["bigram_pairs"].tolist()]
        ratios = tensors["bigram_ratios"].numpy()
        return cls(tensors["unigram"].numpy(), dict(zip(pairs, ratios, strict=True)))


def cross_fitted(sequences, labels, classes, vocab_size, folds: int, seed: int) -> list:
    """The features of training texts, each read with ratios fitted on the other folds only
    (``folds`` = 1: on all of them, its own label included)."""
    if folds < 1:
        raise ValueError(
            f"nb_folds is how many folds the training texts are cut into, at least 1; got {folds}"
        )
    if folds == 1:
        return NaiveBayesRatios.fit(sequences, labels, classes, vocab_size).features(sequences)
    fold = np.random.default_rng(seed).permutation(len(sequences)) % folds
    out = [None] * len(sequences)
    for k in range(folds):
        held, rest = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        pick = lambda values, rows: [values[i] for i in rows]  # noqa: E731
        table = NaiveBayesRatios.fit(pick(sequences, rest), pick(labels, rest), classes, vocab_size)
        for i, steps in zip(held, table.features(pick(sequences, held)), strict=True):
            out[i] = steps
    return out


def fit_baseline(texts: list[str], labels: list[int], val_texts, val_labels):
    """TF-IDF of words and bigrams -> logistic regression, C picked on validation accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_x, val_x = tfidf.fit_transform(texts), tfidf.transform(val_texts)
    best = None
    for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(train_x, labels)
        score = float((model.predict(val_x) == np.asarray(val_labels)).mean())
        if best is None or score > best[0]:
            best = (score, model)
    return lambda new_texts: best[1].predict(tfidf.transform(new_texts))
