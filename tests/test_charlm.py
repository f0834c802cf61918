"""The character-level language model: it learns, it samples, its options build."""

import io
import json

import pytest
import torch

from rnnkit.data import Vocab
from rnnkit.tasks import charlm
from rnnkit.training.trainer import Progress

SMALL_TEXT = "to be or not to be, that is the question. " * 40


def quiet_train(config):
    return charlm.train(config, progress=Progress(io.StringIO()))


def test_hello_learns_to_spell_it(tmp_path):
    config = charlm.Config(
        data="hello",
        hidden=24,
        batch_size=8,
        window=10,
        steps=120,
        minutes=0.0,
        lr=1e-2,
        warmup=5,
        eval_every=120,
        val_chars=400,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / "run"),
    )
    trainer = quiet_train(config)
    assert trainer.best < 0.05
    spelled = charlm.sample(
        tmp_path / "run", prime="h", length=14, temperature=0, out=io.StringIO()
    )
    assert spelled == "hellohellohello"


def test_loss_falls_on_a_small_corpus(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text(SMALL_TEXT)
    config = charlm.Config(
        data=str(corpus),
        hidden=32,
        batch_size=8,
        window=16,
        steps=60,
        minutes=0.0,
        eval_every=20,
        warmup=5,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / "run"),
    )
    quiet_train(config)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in metrics]
    assert [r["step"] for r in rows] == [20, 40, 60]
    losses = [r["val_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]
    assert rows[-1]["val_bpc"] == pytest.approx(rows[-1]["val_loss"] / 0.6931471805599453)


def small_model(**changes):
    config = charlm.Config(hidden=8, **changes)
    torch.manual_seed(0)
    return charlm.CharLM(11, config)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole"])
def test_every_cell_gives_logits_and_a_state(cell):
    model = small_model(cell=cell, layers=2, dropout=0.1)
    logits, state = model(torch.randint(0, 11, (5, 3)))
    assert logits.shape == (5, 3, 11)
    parts = state if isinstance(state, tuple) else (state,)
    assert all(p.shape == (2, 3, 8) for p in parts)
    assert len(parts) == (2 if cell in ("lstm", "peephole") else 1)


def test_one_hot_input_and_tied_weights():
    one_hot = small_model(one_hot=True)
    assert one_hot.embed is None and one_hot(torch.zeros(2, 1, dtype=torch.long))[0].shape == (
        2,
        1,
        11,
    )
    tied = small_model(tie=True)
    assert tied.head.weight is tied.embed.weight
    assert tied.embed.weight.shape == (11, 8)  # --tie takes the hidden size
    with pytest.raises(ValueError, match="--tie needs a learned embedding"):
        small_model(tie=True, one_hot=True)


def test_input_is_an_embedding_unless_one_hot_is_asked_for():
    assert not charlm.takes_one_hot(charlm.Config(), 11)  # unset: an embedding
    assert charlm.takes_one_hot(charlm.Config(one_hot=True), 300)
    model = charlm.CharLM(11, charlm.Config(hidden=8))
    assert model.embed is not None and not model.one_hot


def test_a_run_saved_with_its_input_unset_loads_as_it_was_trained(tmp_path):
    config = charlm.Config(
        data="hello", hidden=8, one_hot=True, batch_size=4, window=8, steps=2, minutes=0.0,
        eval_every=2, device="cpu", precision="fp32", out=str(tmp_path / "run"),
    )  # fmt: skip
    quiet_train(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    saved["one_hot"] = None  # as runs were saved before the input was written down
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    loaded, _, model = charlm.load_run(tmp_path / "run", "cpu")
    assert loaded.one_hot and model.one_hot and model.embed is None


def test_dropout_is_as_given_and_reaches_every_place_it_falls():
    model = charlm.CharLM(11, charlm.Config(hidden=8, layers=2, dropout=0.3))
    assert model.drop.p == 0.3 and model.rnn.dropout == 0.3
    assert charlm.CharLM(11, charlm.Config(hidden=8, layers=2)).drop.p == 0.0  # not yet picked


@pytest.mark.parametrize("one_hot", [True, False])
def test_dropout_falls_on_an_embedding_but_never_on_a_one_hot_input(one_hot):
    model = small_model(one_hot=one_hot, dropout=0.5).train()
    seen = []
    model.rnn.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = torch.randint(0, 11, (20, 4))
    model(x)
    if one_hot:  # every character arrives whole
        assert torch.equal(seen[0], torch.nn.functional.one_hot(x, 11).float())
    else:  # about half the embedding's entries dropped, the rest scaled by 2
        embedded = model.embed(x)
        dropped = seen[0] == 0
        assert 0.3 < dropped.float().mean() < 0.7
        assert torch.allclose(seen[0][~dropped], 2 * embedded[~dropped])


def test_each_sampled_character_costs_one_step():
    model = small_model().eval()
    vocab = Vocab(["\ufffd"] + list("abcdefghij"))
    lengths = []
    real_forward = model.rnn.forward
    model.rnn.forward = lambda x, state=None: lengths.append(x.shape[0]) or real_forward(x, state)
    text = "".join(
        charlm.generate(model, vocab, "abc", 6, temperature=1.0, seed=3, streaming=False)
    )
    assert len(text) == 6 and "\ufffd" not in text
    assert lengths == [3, 1, 1, 1, 1, 1, 1]  # the prime once, then one step per character
    steps = []
    real_stream_step = charlm.next_step_of_stream

    def counting(model, state):
        step = real_stream_step(model, state)
        return lambda index: steps.append(index) or step(index)

    charlm.next_step_of_stream, lengths[:] = counting, []
    try:
        streamed = "".join(charlm.generate(model, vocab, "abc", 6, temperature=1.0, seed=3))
    finally:
        charlm.next_step_of_stream = real_stream_step
    assert lengths == [3] and len(steps) == 6  # the prime once, then one stream step a char
    assert streamed == text  # the stream computes what the model computes


@pytest.mark.parametrize("cell,one_hot", [("lstm", False), ("gru", True), ("peephole", False)])
def test_streamed_sampling_equals_the_models_own_steps(cell, one_hot):
    torch.manual_seed(5)
    model = small_model(cell=cell, one_hot=one_hot, layers=2).eval()
    vocab = Vocab(["\ufffd"] + list("abcdefghij"))
    kwargs = dict(temperature=1.0, seed=11)
    reference = "".join(charlm.generate(model, vocab, "ab", 40, streaming=False, **kwargs))
    assert "".join(charlm.generate(model, vocab, "ab", 40, **kwargs)) == reference


def test_seeded_sampling_is_reproducible_and_temperature_zero_is_argmax():
    model = small_model().eval()
    vocab = Vocab(["\ufffd"] + list("abcdefghij"))
    first = "".join(charlm.generate(model, vocab, "ab", 40, temperature=1.0, top_k=5, seed=7))
    again = "".join(charlm.generate(model, vocab, "ab", 40, temperature=1.0, top_k=5, seed=7))
    other = "".join(charlm.generate(model, vocab, "ab", 40, temperature=1.0, top_k=5, seed=8))
    assert first == again and first != other
    logits = torch.tensor([9.0, 1.0, 3.0, 2.0])
    assert charlm.pick_next(logits, 0.0, 0, torch.Generator()) == 2  # never index 0, the unknown
    assert charlm.pick_next(logits, 1.0, 1, torch.Generator()) == 2  # top-1 is argmax


def test_unseen_prime_characters_are_read_as_unknown(tmp_path, capsys):
    config = charlm.Config(
        data="hello",
        hidden=8,
        batch_size=4,
        window=8,
        steps=2,
        minutes=0.0,
        eval_every=2,
        val_chars=100,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / "run"),
    )
    quiet_train(config)
    text = charlm.sample(tmp_path / "run", prime="hex!", length=5, out=io.StringIO())
    assert text.startswith("hex!") and len(text) == 9
    assert "'x!'" in capsys.readouterr().err
