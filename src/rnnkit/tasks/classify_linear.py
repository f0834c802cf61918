"""The classical baselines of text classification, linear models of word and bigram counts
that a run fits on its training part, saves beside the recurrent model and reloads.

- ``tfidf``: TF-IDF of words and bigrams (sublinear term frequency, l2-normalised rows) ->
  logistic regression; multinomial with more than two classes.
- ``nblr``: NB-LR, the NBSVM of Wang & Manning 2012 (section 2.2) with the logistic loss in
  place of the hinge: binary word and bigram indicators x, scaled by their Naive-Bayes
  log-count ratios r (:func:`rnnkit.tasks.classify_features.log_ratios`, fitted on the
  training part), -> logistic regression. Beyond two classes one model per class against
  the rest (their one-vs-rest), each on its own class's ratios, the probabilities normalised.
  Departure: no interpolation with the mean weight (their beta); C picked on validation.

Both take the regularisation C of :data:`C_GRID` with the best validation accuracy (the
smallest on a tie). A fitted model is one linear map of the counts: for NB-LR
w . (r * x) + b = (w * r) . x + b, so the ratios fold into the weights. It is saved as
safetensors (weights, bias, IDF) with its n-grams and link in the JSON metadata: never a
pickle, which a run directory refuses.

Shape letters: N texts, F n-grams, R rows of the linear map (1 for two classes, else K), K classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rnnkit.tasks.classify_features import log_ratios
from rnnkit.training.checkpoint import load_tensors, save_tensors

KINDS = ("tfidf", "nblr")
C_GRID = (0.5, 2.0, 8.0, 32.0)  # inverse regularisation strengths tried
NGRAMS = (1, 2)  # words and bigrams


def file_name(kind: str) -> str:
    """The baseline's file in the run directory."""
    return f"baseline_{kind}.safetensors"


def vectorizer(kind: str, terms: list[str] | None = None, idf: np.ndarray | None = None):
    """TF-IDF (``tfidf``) or binary counts (``nblr``) of words and bigrams; with ``terms``,
    over those n-grams (and ``idf``) as fitted before."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    vocabulary = None if terms is None else {t: i for i, t in enumerate(terms)}
    if kind == "nblr":
        return CountVectorizer(ngram_range=NGRAMS, binary=True, vocabulary=vocabulary)
    tfidf = TfidfVectorizer(ngram_range=NGRAMS, sublinear_tf=True, vocabulary=vocabulary)
    if idf is not None:
        tfidf.idf_ = idf  # sklearn's setter: a fitted vectorizer without refitting
    return tfidf


def link(z: np.ndarray, kind: str) -> np.ndarray:
    """(N, R) scores -> (N, K) probabilities: the logistic function for two classes, the
    softmax of the multinomial model, normalised one-vs-rest logistics for NB-LR."""
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    if kind == "nblr":
        p = 1.0 / (1.0 + np.exp(-z))
        return p / p.sum(1, keepdims=True)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@dataclass
class LinearBaseline:
    """A fitted baseline: n-grams -> features -> (N, R) linear scores -> probabilities."""

    kind: str  # "tfidf" or "nblr"
    terms: list[str]  # the training part's n-grams, in feature order
    weight: np.ndarray  # (R, F) float64
    bias: np.ndarray  # (R,)
    c: float  # the regularisation picked on validation
    idf: np.ndarray | None = None  # (F,) for tfidf
    features: object = field(default=None, repr=False)  # the vectorizer, built once

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(N, K) class probabilities of ``texts``."""
        if self.features is None:
            self.features = vectorizer(self.kind, self.terms, self.idf)
        x = self.features.transform(texts)  # (N, F) sparse
        return link(np.asarray(x @ self.weight.T) + self.bias, self.kind)  # (N, R) -> (N, K)

    def save(self, path: Path) -> None:
        tensors = {"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias)}
        if self.idf is not None:
            tensors["idf"] = torch.from_numpy(np.asarray(self.idf, dtype=np.float64))
        save_tensors(path, tensors, {"kind": self.kind, "c": self.c, "terms": self.terms})

    @classmethod
    def load(cls, path: Path) -> LinearBaseline:
        tensors, meta = load_tensors(path)
        idf = tensors["idf"].numpy() if "idf" in tensors else None
        weight, bias = tensors["weight"].numpy(), tensors["bias"].numpy()
        return cls(meta["kind"], meta["terms"], weight, bias, meta["c"], idf)


def logistic(x, y, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, F) weights and (R,) bias of a logistic regression of ``y`` on ``x``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    return model.coef_.astype(np.float64), model.intercept_.astype(np.float64)


def fit_map(kind: str, x, y: np.ndarray, classes: int, c: float, ratios) -> tuple:
    """The linear map of the counts for one C: TF-IDF + LR, or NB-LR with ``ratios`` (F, C)."""
    if kind == "tfidf":
        return logistic(x, y, c)
    if classes == 2:
        w, b = logistic(x.multiply(ratios[:, 0]).tocsr(), y, c)
        return w * ratios[:, 0], b  # (1, F): the ratios folded into the weights
    rows = [logistic(x.multiply(ratios[:, k]).tocsr(), y == k, c) for k in range(classes)]
    weight = np.concatenate([w * ratios[:, k] for k, (w, _) in enumerate(rows)])  # (K, F)
    return weight, np.concatenate([b for _, b in rows])


def fit(kind: str, texts, labels, val_texts, val_labels, classes: int) -> LinearBaseline:
    """Fit on the training texts, with C picked by accuracy on the validation texts."""
    if kind not in KINDS:
        raise ValueError(f"a baseline is one of {KINDS}; got {kind!r}")
    features = vectorizer(kind)
    x, y = features.fit_transform(texts).tocsr(), np.asarray(labels)  # (N, F)
    terms = [str(t) for t in features.get_feature_names_out()]
    ratios = None
    if kind == "nblr":  # (F, K) training texts of each class holding each n-gram
        counts = np.stack([np.asarray(x[y == k].sum(0)).ravel() for k in range(classes)], 1)
        ratios = log_ratios(counts)
    idf, val_x = getattr(features, "idf_", None), features.transform(val_texts)
    best = None
    for c in C_GRID:
        weight, bias = fit_map(kind, x, y, classes, c, ratios)
        predicted = link(np.asarray(val_x @ weight.T) + bias, kind).argmax(1)
        accuracy = float((predicted == np.asarray(val_labels)).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, LinearBaseline(kind, terms, weight, bias, c, idf, features))
    return best[1]
