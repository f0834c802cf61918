"""Encoder-decoder translation: masking, teacher forcing, the bridge, and a tiny run end to end."""

import io
import json
import math

import pytest
import torch

from rnnkit import cli
from rnnkit.data.pairs import EOS, PAD, SOS, PairsError, make_batch, pad
from rnnkit.models import decode
from rnnkit.models.seq2seq import Seq2Seq
from rnnkit.tasks import translate as tr

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, shared machines
ATTENTIONS = ("none", "bahdanau", "luong")
SOURCES = [[4, 5, 6, 7, 8], [9, 4], [6, 6, 6, 5], [7]]


def tiny_model(attention: str, **options) -> Seq2Seq:
    torch.manual_seed(0)
    settings = dict(embedding=6, hidden=8, attention=attention, dropout=0.0)
    return Seq2Seq(11, 10, **{**settings, **options}).eval()


def padded(sources, extra: int = 0):
    """(B, S + extra) ids padded with PAD, and the lengths."""
    ids = pad(sources)
    ids = torch.cat([ids, torch.full((len(sources), extra), PAD)], dim=1)
    return ids, torch.tensor([len(s) for s in sources])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_sentence_decodes_the_same_alone_and_in_a_padded_batch(attention):
    model = tiny_model(attention, bidirectional=True, encoder_layers=2)
    ids, lengths = padded(SOURCES, extra=3)
    batch = model.start(ids, lengths)
    together = decode.greedy(model.step, batch, 4, SOS, EOS, 9)
    beams = decode.beam_search(model.step, batch, 4, SOS, EOS, 9, width=3)
    for row, source in enumerate(SOURCES):
        alone = model.start(*padded([source]))
        one = decode.greedy(model.step, alone, 1, SOS, EOS, 9)
        n = int(one.lengths[0])
        assert together.tokens[row, :n].tolist() == one.tokens[0, :n].tolist()
        torch.testing.assert_close(together.log_prob[row], one.log_prob[0])
        beam = decode.beam_search(model.step, alone, 1, SOS, EOS, 9, width=3)
        assert beams.tokens[row, : int(beam.lengths[0])].tolist() == beam.tokens[0].tolist()


@pytest.mark.parametrize("attention", ("bahdanau", "luong"))
def test_padding_gets_no_attention_and_no_memory(attention):
    model = tiny_model(attention)
    ids, lengths = padded(SOURCES, extra=2)
    state = model.start(ids, lengths)
    _, weights = model(ids, lengths, torch.full((4, 3), SOS))  # (B, T, S')
    S = state.memory.shape[1]  # the longest length, or the padded width, by layer kernel
    assert S in (5, 7) and weights.shape == (4, 3, S) and state.memory.shape == (4, S, 8)
    for row, n in enumerate(lengths.tolist()):
        assert torch.all(weights[row, :, n:] == 0.0) and torch.all(state.memory[row, n:] == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 3))


def gold_by_hand(model: Seq2Seq, ids, lengths, target_in):
    """Logits of one decoder step at a time, each fed the known previous token."""
    state, logits = model.start(ids, lengths), []
    for t in range(target_in.shape[1]):
        step_logits, state, _ = model.decoder.step(target_in[:, t], state)
        logits.append(step_logits)
    return torch.stack(logits, dim=1)  # (B, T, V)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_teacher_forcing_one_equals_feeding_the_gold_tokens_by_hand(attention):
    model = tiny_model(attention, decoder_layers=2, decoder_cell="gru")
    ids, lengths = padded(SOURCES)
    target_in = torch.tensor([[SOS, 4, 5, 6], [SOS, 7, 7, PAD], [SOS, 9, PAD, PAD], [SOS, 8, 4, 4]])
    logits, _ = model(ids, lengths, target_in, teacher_forcing_ratio=1.0)
    assert logits.shape == (4, 4, 10)
    torch.testing.assert_close(logits, gold_by_hand(model, ids, lengths, target_in))


def test_teacher_forcing_zero_feeds_the_models_own_guesses():
    model = tiny_model("luong")
    ids, lengths = padded(SOURCES)
    target_in = torch.full((4, 6), 9)
    target_in[:, 0] = SOS
    logits, _ = model(ids, lengths, target_in, teacher_forcing_ratio=0.0)
    fed = torch.cat([target_in[:, :1], logits.argmax(-1)[:, :-1]], dim=1)
    torch.testing.assert_close(logits, gold_by_hand(model, ids, lengths, fed))


def test_the_repetition_guard_is_5_words_or_30_characters_unless_set():
    assert tr.repeat_guard(tr.Config()) == 5 and tr.repeat_guard(tr.Config(tokens="char")) == 30
    assert tr.repeat_guard(tr.Config(no_repeat_ngram=0)) == 0
    assert tr.repeat_guard(tr.Config(tokens="char", no_repeat_ngram=3)) == 3


def test_teacher_forcing_ratio_decays_linearly():
    config = tr.Config(teacher_forcing=1.0, teacher_forcing_end=0.5, teacher_forcing_steps=100)
    assert [tr.teacher_forcing_ratio(config, s) for s in (0, 50, 100, 500)] == [1, 0.75, 0.5, 0.5]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_the_loss_ignores_padding(attention):
    model = tiny_model(attention)
    pairs = [([4, 5, 6], [4]), ([7], [5, 6, 7, 8])]
    total, correct, count = tr.batch_loss(model, make_batch(pairs))
    alone = [tr.batch_loss(model, make_batch([p])) for p in pairs]
    assert count == 2 + 5 == sum(n for _, _, n in alone)
    assert correct == sum(c for _, c, _ in alone)
    torch.testing.assert_close(total, sum(t for t, _, _ in alone))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_golden_loss_of_a_zero_model_counts_real_tokens_only(attention):
    # Every weight zero: h = 0, contexts 0, logits 0, so each real token costs exactly log V.
    model = tiny_model(attention)
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)
    batch = make_batch([([4, 5, 6, 7], [4]), ([7], [5, 6, 7])])  # 2 + 4 real targets, 2 pads
    total, _, count = tr.batch_loss(model, batch)
    assert count == 6 and batch.target_out.numel() == 8
    torch.testing.assert_close(total, torch.tensor(6 * math.log(10)))


def test_bridge_hands_over_or_learns_the_state():
    same = Seq2Seq(11, 9, 4, 8, bidirectional=False)
    assert same.bridge.copy and len(same.bridge.project) == 0
    for options in (dict(bidirectional=True), dict(encoder_cell="gru"), dict(decoder_layers=2)):
        model = Seq2Seq(11, 9, 4, 8, **options).eval()
        assert not model.bridge.copy
        state = model.start(*padded(SOURCES))
        layers = options.get("decoder_layers", 1)
        assert [h.shape for h in state.hidden] == [(4, layers, 8)] * 2  # LSTM decoder: (h, c)


def test_bad_model_settings_say_what_was_expected():
    with pytest.raises(ValueError, match="attention must be one of"):
        Seq2Seq(9, 9, attention="dot")
    with pytest.raises(ValueError, match="cell must be one of"):
        Seq2Seq(9, 9, encoder_cell="lstn")


NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUMEROS = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]


def tiny_corpus(tmp_path):
    """Two-digit numbers read digit by digit, in reverse in the target; two bad lines."""
    lines = [
        f"{NUMBERS[a]} {NUMBERS[b]}\t{NUMEROS[b]} {NUMEROS[a]}"
        for a in range(10)
        for b in range(10)
    ]
    path = tmp_path / "digits.tsv"
    path.write_text("\n".join(lines[:50] + ["no tab", "\tvacío"] + lines[50:]) + "\n")
    return path


def test_a_tiny_run_trains_translates_and_evaluates(tmp_path, capsys):
    data = tiny_corpus(tmp_path)
    run = tmp_path / "run"
    config = tr.Config(
        data=str(data),
        embedding=8,
        hidden=16,
        batch_size=16,
        steps=20,
        minutes=0.0,
        eval_every=10,
        warmup=5,
        val_pairs=0,
        out=str(run),
        val_fraction=0.1,
        test_fraction=0.1,
    )
    tr.train(config)
    err = capsys.readouterr().err
    assert f"{data}:51: no tab" in err and f"{data}:52: empty source" in err
    test = json.loads((run / "test.json").read_text())
    assert test["pairs"] == 10 and test["beam"] == 5 and 0 <= test["chrf"] <= 100
    assert test["copy_source_exact"] == 0 and f"test: BLEU {test['bleu']:.1f}" in err
    assert 0 < test["one_token_share"] <= 1
    # digits reversed: word for word gets every word and misses the order; copying gets nothing
    assert test["word_for_word_chrf"] > 50 > test["copy_source_chrf"]
    assert "word for word by IBM Model 1: BLEU" in err
    assert "training pairs; padding in length-bucketed batches" in err
    saved = json.loads((run / "config.json").read_text())
    assert saved["task"] == "translate" and saved["attention"] == "luong"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20] and 0 <= rows[-1]["val_exact"] <= 1
    out = tr.translate(run, ["three four", "Nine one"], beam=2, heatmap=str(tmp_path / "a.png"))
    assert capsys.readouterr().out.splitlines() == out and len(out) == 2  # printed as made
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    result = tr.evaluate(run, str(data), device="cpu")
    assert result["pairs"] == 100 and 0 <= result["exact"] <= 1 and 0 <= result["bleu"] <= 100
    # eval scores what `rnnkit translate` says with the run's beam, one sentence at a time
    pairs = [
        (f"{NUMBERS[a]} {NUMBERS[b]}", f"{NUMEROS[b]} {NUMEROS[a]}")
        for a in range(10)
        for b in range(10)
    ]
    said = tr.translate(run, [s for s, _ in pairs], out=io.StringIO())
    want = tr.match_scores([t.split() for t in said], [t.split() for _, t in pairs], "word")
    assert result["beam"] == config.beam == 5
    assert result["exact"] == want["exact"] and result["bleu"] == pytest.approx(want["bleu"])
    assert cli.main(["eval", str(run), "--data", str(data), "--device", "cpu"]) == 0
    assert "exact" in capsys.readouterr().out


def test_commands_translate_stdin_and_report_bad_data(tmp_path, capsys, monkeypatch):
    data = tiny_corpus(tmp_path)
    run = tmp_path / "run"
    config = tr.Config(
        data=str(data),
        embedding=4,
        hidden=8,
        steps=2,
        minutes=0.0,
        eval_every=2,
        warmup=1,
        attention="none",
        out=str(run),
    )
    tr.train(config)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("one two\nthree\n"))
    assert cli.main(["translate", str(run)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # after two steps of training the model says "ocho uno ocho ocho ..." to anything
    texts = ["one two", "three four", "nine"] * 4
    assert cli.main(["translate", str(run), *texts, "--no-repeat-ngram", "0"]) == 0
    said, err = capsys.readouterr()
    assert "of the output is the token" in err and "--no-repeat-ngram" in err
    assert max(len(line.split()) for line in said.splitlines()) > 2
    assert cli.main(["translate", str(run), *texts, "--no-repeat-ngram", "1"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 12 and all(len(set(words)) == len(words) for words in lines)
    assert cli.main(["translate", str(run), "one", "--heatmap", str(tmp_path / "h.png")]) == 2
    assert "no attention (trained with --attention none)" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("no tab\n")
    assert (
        cli.main(["train", "translate", "--data", str(tmp_path / "bad.tsv"), "--steps", "1"]) == 2
    )
    assert "bad.tsv: no line of the form source<TAB>target" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no training pair is at most 1 tokens long"):
        tr.prepare(tr.Config(data=str(data), max_length=1))


def test_numbers_command_writes_a_tsv(tmp_path, capsys):
    out = tmp_path / "numbers.tsv"
    assert cli.main(["data", "numbers-en-es", str(out), "--numbers", "40"]) == 0
    assert "40 pairs written" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 40
    with pytest.raises(PairsError):
        tr.held_out_pairs(tr.Config(), str(tmp_path / "missing.tsv"))
