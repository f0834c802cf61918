"""Per-step tagging: the masked loss, the regime data, .npz files, the run end to end."""

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.data.regimes import REGIMES, TagDataError, Tagged, generate_regimes, load_npz, save_npz
from rnnkit.tasks import tag
from rnnkit.training.trainer import Progress


def tiny_config(tmp_path, **changes) -> tag.Config:
    settings = dict(
        sequences=40,
        hidden=8,
        steps=3,
        minutes=0.0,
        eval_every=3,
        warmup=1,
        batch_size=8,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / "run"),
    )
    return tag.Config(**{**settings, **changes})


def padded_batch():
    """Two sequences of lengths 5 and 3, padded to 5, with random inputs and labels."""
    torch.manual_seed(0)
    x = torch.randn(5, 2, 1)  # (T, B, F)
    y = torch.randint(0, 4, (5, 2))  # (T, B)
    return x, y, torch.tensor([5, 3])


# --- the masked per-step loss ---


def test_masked_loss_ignores_whatever_sits_in_the_padding():
    torch.manual_seed(0)
    model = tag.Tagger(1, 4, tag.Config(hidden=6))
    x, y, lengths = padded_batch()
    loss = tag.masked_loss(model(x, lengths), y, lengths)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    x2, y2 = x.clone(), y.clone()
    x2[3:, 1] = 100.0  # padded steps of the shorter sequence
    y2[3:, 1] = 3 - y2[3:, 1]
    loss2 = tag.masked_loss(model(x2, lengths), y2, lengths)
    grads2 = torch.autograd.grad(loss2, list(model.parameters()))
    assert torch.equal(loss, loss2)
    assert all(torch.equal(g, g2) for g, g2 in zip(grads, grads2, strict=True))


def test_masked_loss_is_the_mean_over_real_steps_of_each_sequence_alone():
    torch.manual_seed(0)
    model = tag.Tagger(1, 4, tag.Config(hidden=6)).eval()
    x, y, lengths = padded_batch()
    batched = tag.masked_loss(model(x, lengths), y, lengths)
    alone = [
        F.cross_entropy(model(x[:n, b : b + 1], torch.tensor([n]))[:, 0], y[:n, b], reduction="sum")
        for b, n in enumerate(lengths.tolist())
    ]
    assert batched.item() == pytest.approx((sum(alone) / 8).item(), rel=1e-6)


def test_masked_loss_by_hand_with_constant_logits():
    logits = torch.zeros(3, 2, 4)  # uniform over 4 classes: every real step costs log 4
    logits[2, 1] = 1000.0  # a padded step that would cost a lot if it counted
    labels = torch.zeros(3, 2, dtype=torch.long)
    labels[2, 1] = 3
    loss = tag.masked_loss(logits, labels, torch.tensor([3, 2]))
    assert loss.item() == pytest.approx(np.log(4))


# --- data ---


def test_regimes_are_seeded_labelled_and_switch():
    data = generate_regimes(sequences=20, min_length=50, max_length=80, seed=3)
    again = generate_regimes(sequences=20, min_length=50, max_length=80, seed=3)
    assert len(data) == 20
    assert all(np.array_equal(a, b) for a, b in zip(data.inputs, again.inputs, strict=True))
    for x, y in zip(data.inputs, data.labels, strict=True):
        assert x.shape == (len(y), 1) and 50 <= len(y) <= 80
        assert set(np.unique(y)) <= set(range(len(REGIMES)))
    labels = np.concatenate(data.labels)
    assert len(np.unique(labels)) == len(REGIMES)
    runs = [len(r) for y in data.labels for r in np.split(y, np.flatnonzero(np.diff(y)) + 1)]
    assert min(runs[:-1]) >= 1 and np.mean(runs) > 5


def test_npz_flat_and_padded_layouts(tmp_path):
    data = Tagged("t", [np.ones((3, 2)), np.zeros((2, 2))], [np.array([1, 2, 1]), np.array([2, 2])])
    save_npz(str(tmp_path / "flat.npz"), data)
    flat = load_npz(str(tmp_path / "flat.npz"))
    assert [x.shape for x in flat.inputs] == [(3, 2), (2, 2)]
    assert flat.labels[1].tolist() == [2, 2]
    padded = tmp_path / "padded.npz"
    np.savez(
        padded, inputs=np.ones((2, 4)), labels=np.array([["a"] * 4, ["b"] * 4]), lengths=[4, 2]
    )
    loaded = load_npz(str(padded))
    assert loaded.inputs[1].shape == (2, 1) and loaded.labels[1].tolist() == ["b", "b"]


def test_bad_npz_files_name_the_file_and_problem(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, inputs=np.ones(3), labels=np.ones(3))
    with pytest.raises(TagDataError, match=r"missing\.npz: missing array\(s\) \['lengths'\]"):
        load_npz(str(missing))
    nan = tmp_path / "nan.npz"
    np.savez(nan, inputs=np.array([1.0, np.nan, 2.0]), labels=np.zeros(3), lengths=[1, 2])
    with pytest.raises(TagDataError, match=r"nan\.npz: sequence 1, step 0: inputs are NaN"):
        load_npz(str(nan))
    words = tmp_path / "words.npz"
    np.savez(words, inputs=np.array(["a", "b"]), labels=np.zeros(2), lengths=[2])
    with pytest.raises(TagDataError, match=r"words\.npz: 'inputs' must be numbers"):
        load_npz(str(words))
    short = tmp_path / "short.npz"
    np.savez(short, inputs=np.ones(3), labels=np.zeros(3), lengths=[2, 2])
    with pytest.raises(TagDataError, match=r"short\.npz: flat inputs \(3 steps\)"):
        load_npz(str(short))


def test_a_label_seen_only_outside_training_is_named(tmp_path):
    data = generate_regimes(sequences=20, seed=1)
    config = tiny_config(tmp_path, sequences=20)
    _, _, test = tag.split_indices(20, config.val_fraction, config.test_fraction, 1)
    odd = int(test[0])
    data.labels[odd] = np.full_like(data.labels[odd], 7)  # a class only this test sequence has
    data.name = "odd.npz"
    with pytest.raises(
        TagDataError, match=rf"odd\.npz: sequence {odd} \(test\) has label\(s\) \[7\]"
    ):
        tag.prepare(config, data)


def test_too_few_sequences_for_a_split_say_so():
    with pytest.raises(TagDataError, match="3 sequences are too few"):
        tag.split_indices(3, 0.15, 0.15, 1)


def test_scaler_is_fitted_on_training_sequences_only(tmp_path):
    data = generate_regimes(sequences=20, seed=1)
    config = tiny_config(tmp_path, sequences=20)
    train, val, test = tag.split_indices(20, config.val_fraction, config.test_fraction, 1)
    for i in [*val, *test]:
        data.inputs[i] = data.inputs[i] + 1e6
    prepared = tag.prepare(config, data)
    honest = np.concatenate([data.inputs[i] for i in train])
    assert prepared.scaler.mean == pytest.approx(honest.mean(axis=0))
    assert abs(prepared.scaler.mean[0]) < 10


# --- the run end to end ---


def test_train_writes_metrics_and_timeline_and_eval_scores_a_file(tmp_path):
    config = tiny_config(tmp_path)
    trainer = tag.train(config, progress=Progress(io.StringIO()))
    assert trainer.step == 3
    run = tmp_path / "run"
    result = json.loads((run / "test_metrics.json").read_text())
    assert 0.0 <= result["accuracy"] <= 1.0 and result["steps"] > 0
    assert (run / "timeline.png").stat().st_size > 0
    path = tmp_path / "new.npz"
    save_npz(str(path), generate_regimes(sequences=5, seed=9))
    scores = tag.evaluate(run, str(path), "cpu")
    assert scores["sequences"] == 5 and 0.0 <= scores["accuracy"] <= 1.0
