"""Which model a classify run keeps: the recurrent model, a classical baseline, or the mean
of their probabilities, chosen on the validation part (never the test part).

The candidates are the recurrent model (``rnn``), TF-IDF + logistic regression (``tfidf``)
and NB-LR (``nblr``) of :mod:`rnnkit.tasks.classify_linear`, and ``ensemble``: the mean of
the models' class probabilities, as Mesnil et al. 2014 ("Ensemble of generative and
discriminative techniques for sentiment analysis of movie reviews") combined a recurrent
model with NBSVM. Departures: equal weights, where they tuned the weights on validation (with
a few hundred validation texts, weights fitted to them would be fitted to their noise); and
the recurrent model joins the two baselines only when its validation accuracy is at least
the weaker baseline's, so that a model that learned little (a few hundred long documents)
does not dilute two that learned more.

``auto`` keeps the ensemble unless one model's validation accuracy is above the ensemble's by
more than one standard error of an accuracy a on n texts, sqrt(a (1 - a) / n): smaller
differences are the noise of the validation sample, and the best of four noisy scores is
mostly the luckiest (on the suite of docs/benchmarks.md, picking the highest validation
accuracy kept single models that then fell below the better baseline on the test part).
Without baselines there is no ensemble, and the highest accuracy wins, on a tie the first
of :data:`PREFERENCE`.

Shape letters: N texts, K classes.
"""

from __future__ import annotations

import numpy as np

from rnnkit.tasks import confusion

CANDIDATES = ("rnn", "tfidf", "nblr", "ensemble")
PREFERENCE = ("ensemble", "nblr", "tfidf", "rnn")  # the order that breaks a tie
MODELS = ("auto", *CANDIDATES)  # --model


def ensemble_members(probs: dict[str, np.ndarray], labels) -> list[str]:
    """The models the ensemble averages, from their validation probabilities: the baselines,
    and the recurrent model if it is at least as accurate as the weaker of them."""
    baselines = [name for name in probs if name != "rnn"]
    if not baselines:
        return []
    weakest = min(accuracy_of(probs[name], labels) for name in baselines)
    return (["rnn"] if accuracy_of(probs["rnn"], labels) >= weakest else []) + baselines


def candidates(rnn: np.ndarray, baselines: dict[str, np.ndarray], members) -> dict:
    """(N, K) probabilities of each candidate from those of the recurrent model and of the
    baselines; the ensemble, the mean of ``members`` (of them all when none is at hand),
    only when there are baselines."""
    probs = {"rnn": rnn, **baselines}
    if baselines:
        averaged = [name for name in members if name in probs] or list(probs)
        probs["ensemble"] = np.mean([probs[name] for name in averaged], axis=0)  # (N, K)
    return probs


def choose(probs: dict[str, np.ndarray], labels, asked: str = "auto") -> tuple[str, str]:
    """The candidate kept, and why, from the validation probabilities of each candidate."""
    if asked not in MODELS:
        raise ValueError(f"--model is one of {MODELS}; got {asked!r}")
    accuracy = {name: accuracy_of(p, labels) for name, p in probs.items()}
    scores = ", ".join(f"{name} {accuracy[name]:.4f}" for name in PREFERENCE if name in accuracy)
    if asked != "auto":
        if asked not in probs:
            raise ValueError(f"--model {asked} needs the baselines (--baseline)")
        return asked, f"asked for with --model {asked} (validation accuracy: {scores})"
    best = max(accuracy.values())
    chosen = next(name for name in PREFERENCE if accuracy.get(name) == best)
    if "ensemble" not in accuracy:
        return chosen, f"highest validation accuracy ({scores})"
    margin = standard_error(accuracy["ensemble"], len(labels))
    if best - accuracy["ensemble"] > margin:
        return chosen, (f"validation accuracy above the ensemble's by more than its standard "
                        f"error {margin:.4f} ({scores})")  # fmt: skip
    return "ensemble", (f"no model above the ensemble by more than its standard error "
                        f"{margin:.4f} on validation ({scores})")  # fmt: skip


def standard_error(accuracy: float, n: int) -> float:
    """sqrt(a (1 - a) / n): the standard error of an accuracy ``a`` measured on ``n`` texts."""
    return float(np.sqrt(accuracy * (1.0 - accuracy) / n))


def accuracy_of(probs: np.ndarray, labels) -> float:
    return float((probs.argmax(1) == np.asarray(labels)).mean())


def report(probs: dict[str, np.ndarray], labels, classes: int, prefix: str) -> dict:
    """Accuracy and macro-F1 of every candidate: ``{prefix}{name}_accuracy`` and the like."""
    out = {}
    for name, p in probs.items():
        out.update(confusion.scores(labels, p.argmax(1), classes, f"{prefix}{name}_"))
    return out
