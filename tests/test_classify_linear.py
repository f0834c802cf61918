"""The classical baselines: fitted on training texts, C picked on validation, saved without
pickles and reloaded to predict the same."""

import numpy as np
import pytest

from rnnkit.tasks import classify_linear as linear
from rnnkit.training.checkpoint import load_tensors

WORDS = {
    0: ["great", "superb", "fun"],
    1: ["dull", "awful", "flat"],
    2: ["odd", "strange", "weird"],
}


def texts(n, classes, seed):
    """Short texts whose label is the word set they mostly draw from, with shared filler."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    out = []
    for y in labels:
        own = rng.choice(WORDS[int(y)], size=3).tolist()
        other = rng.choice(WORDS[int(rng.integers(0, classes))], size=1).tolist()
        out.append(" ".join(["the", "film", "was", *own, "and", *other]))
    return out, labels.tolist()


@pytest.mark.parametrize("kind", linear.KINDS)
@pytest.mark.parametrize("classes", [2, 3])
def test_fit_learns_saves_and_reloads_to_the_same_probabilities(tmp_path, kind, classes):
    train, train_y = texts(60, classes, 0)
    val, val_y = texts(20, classes, 1)
    test, test_y = texts(20, classes, 2)
    model = linear.fit(kind, train, train_y, val, val_y, classes)
    probs = model.probabilities(test)
    assert probs.shape == (20, classes)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == np.array(test_y)).mean() >= 0.8
    assert model.c in linear.C_GRID

    path = tmp_path / linear.file_name(kind)
    model.save(path)
    _, meta = load_tensors(path)  # a sealed safetensors file, not a pickle
    assert meta["kind"] == kind and meta["terms"] == model.terms
    again = linear.LinearBaseline.load(path)
    np.testing.assert_allclose(again.probabilities(test), probs, rtol=1e-12, atol=1e-12)


def test_tfidf_gives_sklearn_s_probabilities():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, train_y = texts(60, 3, 0)
    test, _ = texts(10, 3, 2)
    model = linear.fit("tfidf", train, train_y, *texts(20, 3, 1), 3)
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = tfidf.fit_transform(train)
    reference = LogisticRegression(C=model.c, max_iter=2000).fit(x, train_y)
    np.testing.assert_allclose(
        model.probabilities(test), reference.predict_proba(tfidf.transform(test)), atol=1e-8
    )


def test_nblr_folds_the_ratios_into_the_weights():
    """w . (r * x) + b, the model fitted on scaled features, equals (w * r) . x + b."""
    from sklearn.linear_model import LogisticRegression

    train, train_y = texts(60, 2, 0)
    model = linear.fit("nblr", train, train_y, *texts(20, 2, 1), 2)
    counts = linear.vectorizer("nblr")
    x = counts.fit_transform(train)
    y = np.array(train_y)
    per_class = np.stack([np.asarray(x[y == k].sum(0)).ravel() for k in range(2)], 1)
    r = linear.log_ratios(per_class)[:, 0]
    reference = LogisticRegression(C=model.c, max_iter=2000).fit(x.multiply(r).tocsr(), y)
    test, _ = texts(10, 2, 2)
    scaled = counts.transform(test).multiply(r).tocsr()
    np.testing.assert_allclose(
        model.probabilities(test), reference.predict_proba(scaled), atol=1e-8
    )


def test_an_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="a baseline is one of"):
        linear.fit("svm", ["a"], [0], ["a"], [0], 2)
