"""Classification scores from the confusion matrix: accuracy, macro-F1, and its picture.

Labels are class indices 0..K-1. Macro-F1 is the unweighted mean over classes of
F1 = 2 * precision * recall / (precision + recall), a class with no true and no predicted
examples counting as F1 = 0 (scikit-learn's ``zero_division=0``).

Class weights for imbalanced labels are "balanced" weights, n / (K * n_k) (King & Zeng 2001,
the form scikit-learn's ``class_weight="balanced"`` uses): every class then carries the same
total weight in the loss.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def confusion_matrix(truth, predicted, classes: int) -> np.ndarray:
    """(K, K) counts; row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth), np.asarray(predicted)), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / max(matrix.sum(), 1))


def macro_f1(matrix: np.ndarray) -> float:
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    denominator = predicted + actual  # F1 = 2 TP / (2 TP + FP + FN)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive),
                   where=denominator > 0)  # fmt: skip
    return float(f1.mean())


def scores(truth, predicted, classes: int, prefix: str = "") -> dict:
    """Accuracy and macro-F1, keys prefixed (``val_accuracy``, ``test_macro_f1``...)."""
    matrix = confusion_matrix(truth, predicted, classes)
    return {f"{prefix}accuracy": accuracy(matrix), f"{prefix}macro_f1": macro_f1(matrix)}


def balanced_weights(labels, classes: int) -> np.ndarray:
    """n / (K * n_k) per class; a class absent from ``labels`` gets weight 0."""
    counts = np.bincount(np.asarray(labels), minlength=classes).astype(float)
    weights = np.divide(len(labels), classes * counts, out=np.zeros(classes), where=counts > 0)
    return weights


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path, title: str = "") -> None:
    """Write the confusion matrix as a PNG: counts in the cells, rows normalised for colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 2.5 + 0.5 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if rates[row, col] > 0.5 else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=colour)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    Path(path).write_bytes(buffer.getvalue())
