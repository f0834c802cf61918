"""Choosing the model a classify run keeps, on validation probabilities."""

import numpy as np
import pytest

from rnnkit.tasks import classify_select as select

LABELS = [0, 1, 1, 0, 1]


def onehot(predicted, classes=2):
    """Confident probabilities of the predicted classes: (N, K)."""
    return np.eye(classes)[predicted] * 0.8 + 0.1


def test_the_ensemble_is_the_mean_of_the_three_models():
    rnn, tfidf, nblr = onehot([0, 0, 1]), onehot([1, 0, 1]), onehot([1, 1, 1])
    probs = select.candidates(rnn, {"tfidf": tfidf, "nblr": nblr}, ["rnn", "tfidf", "nblr"])
    assert list(probs) == ["rnn", "tfidf", "nblr", "ensemble"]
    np.testing.assert_allclose(probs["ensemble"], (rnn + tfidf + nblr) / 3)
    assert probs["ensemble"].shape == (3, 2)
    two = select.candidates(rnn, {"tfidf": tfidf, "nblr": nblr}, ["tfidf", "nblr"])
    np.testing.assert_allclose(two["ensemble"], (tfidf + nblr) / 2)
    assert list(select.candidates(rnn, {}, [])) == ["rnn"]  # no baselines: no ensemble


def test_the_rnn_joins_the_ensemble_only_as_accurate_as_the_weaker_baseline():
    tfidf, nblr = onehot([0, 1, 1, 0, 0]), onehot([1, 1, 1, 1, 1])  # 4 and 3 of 5
    probs = {"tfidf": tfidf, "nblr": nblr}
    worse = {"rnn": onehot([0, 0, 1, 1, 1]), **probs}  # 3 of 5: as good as nblr
    assert select.ensemble_members(worse, LABELS) == ["rnn", "tfidf", "nblr"]
    worst = {"rnn": onehot([1, 0, 1, 1, 1]), **probs}  # 2 of 5
    assert select.ensemble_members(worst, LABELS) == ["tfidf", "nblr"]
    assert select.ensemble_members({"rnn": tfidf}, LABELS) == []


def test_a_baseline_is_kept_when_the_rnn_is_worse_on_validation():
    probs = {
        "rnn": onehot([1, 1, 1, 1, 1]),  # 3 of 5
        "tfidf": onehot([0, 1, 1, 0, 0]),  # 4 of 5
        "nblr": onehot([0, 1, 1, 0, 1]),  # 5 of 5
        "ensemble": onehot([0, 1, 1, 1, 0]),  # 3 of 5
    }
    model, why = select.choose(probs, LABELS)
    assert model == "nblr"
    assert "nblr 1.0000" in why and "rnn 0.6000" in why


def test_the_rnn_is_kept_when_it_is_better_on_validation():
    probs = {
        "rnn": onehot([0, 1, 1, 0, 1]),  # 5 of 5
        "tfidf": onehot([0, 1, 1, 0, 0]),
        "nblr": onehot([1, 1, 1, 0, 0]),
        "ensemble": onehot([0, 1, 1, 0, 0]),
    }
    assert select.choose(probs, LABELS)[0] == "rnn"


def test_the_ensemble_is_kept_unless_beaten_by_more_than_its_standard_error():
    labels = [0, 1] * 50  # 100 texts
    right = lambda n: onehot(labels[:n] + [1 - y for y in labels[n:]])  # noqa: E731
    probs = {"rnn": right(70), "tfidf": right(84), "nblr": right(80), "ensemble": right(80)}
    assert select.standard_error(0.8, 100) == pytest.approx(0.04)
    model, why = select.choose(probs, labels)  # 84 against 80: within 0.04
    assert model == "ensemble" and "standard error 0.0400" in why
    probs["tfidf"] = right(85)  # 85 against 80: above it
    assert select.choose(probs, labels)[0] == "tfidf"


def test_without_baselines_a_tie_goes_by_the_order_of_preference():
    probs = {name: onehot([0, 1, 1, 0, 1]) for name in ("rnn", "tfidf")}
    assert select.choose(probs, LABELS)[0] == "tfidf"
    assert select.choose({"rnn": probs["rnn"]}, LABELS)[0] == "rnn"


def test_a_model_asked_for_is_kept_whatever_validation_says():
    probs = {"rnn": onehot([1, 1, 1, 1, 1]), "tfidf": onehot([0, 1, 1, 0, 1])}
    model, why = select.choose(probs, LABELS, "rnn")
    assert model == "rnn" and "--model rnn" in why
    with pytest.raises(ValueError, match="needs the baselines"):
        select.choose({"rnn": probs["rnn"]}, LABELS, "nblr")
    with pytest.raises(ValueError, match="--model is one of"):
        select.choose(probs, LABELS, "svm")


def test_report_names_every_candidate():
    probs = {"rnn": onehot([0, 1, 1, 0, 0]), "tfidf": onehot([0, 1, 1, 0, 1])}
    scores = select.report(probs, LABELS, 2, "test_")
    assert scores["test_rnn_accuracy"] == pytest.approx(0.8)
    assert scores["test_tfidf_accuracy"] == pytest.approx(1.0)
    assert set(scores) == {f"test_{n}_{m}" for n in probs for m in ("accuracy", "macro_f1")}
