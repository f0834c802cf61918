"""Naive-Bayes log-count ratios: golden values, cross-fitting, the run file, no leakage."""

import math

import numpy as np
import pytest
import torch
from test_classify import toy_config, toy_rows, write_csv  # tests/test_classify.py

from rnnkit.data.pairs import UNK
from rnnkit.tasks import classify
from rnnkit.tasks import classify_features as features
from rnnkit.tasks.classify_features import NaiveBayesRatios

# Token ids 4 and 5 (0-3 are the special tokens); class 1 texts hold 4 twice, 5 twice.
TEXTS, LABELS = [[4, 4, 5], [5], [4, 5]], [1, 0, 1]


def test_ratios_golden_values():
    table = NaiveBayesRatios.fit(TEXTS, LABELS, classes=2, vocab_size=7)
    # texts holding each token, class 1 / class 0: 4 in 2 / 0, 5 in 2 / 1; with a = 1,
    # p = (3, 3), q = (1, 2): r = log(p / 6) - log(q / 3)
    expected = [0, 0, 0, 0, math.log(1.5), math.log(0.75), 0]  # 6: never seen
    assert table.unigram.shape == (7, 1)
    np.testing.assert_allclose(table.unigram[:, 0], expected, rtol=1e-6)
    # bigrams (4, 4) in 1 / 0 texts, (4, 5) in 2 / 0: p = (2, 3), q = (1, 1)
    assert sorted(table.bigram) == [(4, 4), (4, 5)]
    assert table.bigram[(4, 4)][0] == pytest.approx(math.log(2 / 5) - math.log(1 / 2))
    assert table.bigram[(4, 5)][0] == pytest.approx(math.log(3 / 5) - math.log(1 / 2))
    steps = table.features([[4, 4, 5], [6, 4]])
    assert [s.shape for s in steps] == [(3, 2), (2, 2)]
    log = math.log
    expected = [[log(1.5), 0], [log(1.5), log(0.8)], [log(0.75), log(1.2)]]
    np.testing.assert_allclose(steps[0], expected, rtol=1e-6)
    np.testing.assert_allclose(steps[1], [[0, 0], [math.log(1.5), 0]], rtol=1e-6)


def test_special_tokens_and_their_bigrams_have_no_ratio():
    table = NaiveBayesRatios.fit([[UNK, 4], [UNK, 5]], [1, 0], classes=2, vocab_size=6)
    assert table.unigram[UNK, 0] == 0 and table.unigram[4, 0] > 0 > table.unigram[5, 0]
    assert table.bigram == {}


def test_one_column_per_class_beyond_two_classes_each_against_the_rest():
    table = NaiveBayesRatios.fit([[4], [5], [6], [4]], [0, 1, 2, 0], classes=3, vocab_size=7)
    assert table.unigram.shape == (7, 3) and features.feature_size(3) == 6
    assert table.unigram[4].argmax() == 0 and table.unigram[5].argmax() == 1
    assert table.unigram[6].argmax() == 2 and features.feature_size(2) == 2


def test_cross_fitted_ratios_never_read_the_texts_own_label():
    rng = np.random.default_rng(0)
    texts = [rng.integers(4, 12, size=rng.integers(2, 6)).tolist() for _ in range(40)]
    labels = rng.integers(0, 2, size=40).tolist()
    flipped = list(labels)
    flipped[7] = 1 - flipped[7]
    for folds in (2, 5):
        before = features.cross_fitted(texts, labels, 2, 12, folds, seed=3)
        after = features.cross_fitted(texts, flipped, 2, 12, folds, seed=3)
        np.testing.assert_array_equal(before[7], after[7])
    # without cross-fitting the text's own label moves its ratios: the test can fail
    before = features.cross_fitted(texts, labels, 2, 12, 1, seed=3)
    after = features.cross_fitted(texts, flipped, 2, 12, 1, seed=3)
    assert not np.array_equal(before[7], after[7])


def test_ratios_round_trip_through_the_run_file(tmp_path):
    for texts in (TEXTS, [[4], [5]]):  # the second has no bigram at all
        table = NaiveBayesRatios.fit(texts, [1, 0, 1][: len(texts)], classes=2, vocab_size=7)
        table.save(tmp_path / features.FILE)
        loaded = NaiveBayesRatios.load(tmp_path / features.FILE)
        np.testing.assert_array_equal(loaded.unigram, table.unigram)
        assert loaded.bigram.keys() == table.bigram.keys()
        for pair, ratio in table.bigram.items():
            np.testing.assert_array_equal(loaded.bigram[pair], ratio)
        for a, b in zip(loaded.features(TEXTS), table.features(TEXTS), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_text_alone_and_in_a_padded_batch_pool_the_same_with_ratios(pooling):
    torch.manual_seed(0)
    config = classify.Config(pooling=pooling, embedding=8, hidden=6, nb_features=True)
    model = classify.TextClassifier(50, 2, config).eval()
    texts = [[5, 9, 2], [7, 1, 4, 4, 8, 3, 2], [6]]
    ratios = [np.random.default_rng(i).normal(size=(len(t), 2)).astype(np.float32)
              for i, t in enumerate(texts)]  # fmt: skip
    ids, lengths = classify.pad(texts)  # (7, 3)
    steps = classify.pad_ratios(ratios)  # (7, 3, 2)
    assert steps.shape == (7, 3, 2) and (steps[1:, 2] == 0).all()
    together = model.represent(ids, lengths, steps)
    for b, text in enumerate(texts):
        alone = model.represent(
            torch.tensor(text).view(-1, 1), torch.tensor([len(text)]),
            torch.from_numpy(ratios[b]).unsqueeze(1),
        )  # fmt: skip
        torch.testing.assert_close(alone[0], together[b], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together, model.represent(ids, lengths))  # the ratios count


def saved_ratios(tmp_path, rows, name):
    run = tmp_path / name
    path = write_csv(tmp_path / f"{name}.csv", rows)
    classify.train(toy_config(path, out=str(run), steps=1, baseline=False, min_count=1))
    return NaiveBayesRatios.load(run / features.FILE), classify.load_run(run)


def test_saved_ratios_come_from_the_training_part_only(tmp_path):
    rows = toy_rows(80)
    parts = classify.split_rows(len(rows), toy_config("x"))
    held_out = [int(i) for i in np.concatenate([parts["val"], parts["test"]])]
    changed = [list(r) for r in rows]
    for i in held_out:  # flip the label and change the words of every held-out row
        text, label = changed[i]
        changed[i] = [text.replace("film", "great superb"), "neg" if label == "pos" else "pos"]
    first, run = saved_ratios(tmp_path, rows, "a")
    second, _ = saved_ratios(tmp_path, changed, "b")
    np.testing.assert_array_equal(first.unigram, second.unigram)
    assert first.bigram.keys() == second.bigram.keys()
    for pair, ratio in first.bigram.items():
        np.testing.assert_array_equal(second.bigram[pair], ratio)
    # and they are the ratios of the training part, which load_run hands back
    config, vocab, classes, loaded, _ = run
    _, split = classify.prepare(config)
    train_ids = classify.encode(split["train"].texts, vocab, config)
    fitted = NaiveBayesRatios.fit(train_ids, split["train"].labels, len(classes), len(vocab))
    np.testing.assert_array_equal(loaded.unigram, fitted.unigram)


def test_folds_below_one_are_an_error():
    with pytest.raises(ValueError, match="nb_folds .* at least 1; got 0"):
        features.cross_fitted(TEXTS, LABELS, 2, 7, 0, seed=1)


def test_a_dropped_word_loses_its_ratios(tmp_path):
    config = toy_config(write_csv(tmp_path / "r.csv", toy_rows(80)), min_count=1,
                        word_dropout=0.3, baseline=False)  # fmt: skip
    classes, parts = classify.prepare(config)
    texts = [classify.tokenize(t) for t in parts["train"].texts]
    vocab = classify.TokenVocab.build(texts, 1)
    ratios = classify.fit_ratios(config, classes, vocab, parts["train"])
    task = classify.build_task(config, classes, vocab, parts, {}, ratios)
    ids, lengths, y, steps = task.batch(0, 0, 1)
    assert steps.shape == (*ids.shape, 2)
    dropped = ids == UNK  # min_count=1: every <unk> here is a dropped word
    assert dropped.any() and (steps[dropped] == 0).all()
    assert (steps[~dropped & (ids != 0)][:, 0] != 0).any()
