"""The rule that picks charlm's batch, window and dropout from the corpus and the budget."""

import io
import math

import pytest

from rnnkit.data import CorpusError
from rnnkit.tasks import charlm, charlm_rule
from rnnkit.tasks.charlm_rule import BATCH, MIN_WINDOW, STREAM_WINDOWS, WINDOW
from rnnkit.training.trainer import Progress


def never_timed(batch, window):
    raise AssertionError("the rate is measured only under --minutes, for a choice left unset")


def test_a_long_text_keeps_the_default_window_and_a_short_one_shrinks_it():
    assert charlm_rule.fit_window(None, 10**6, "c") == WINDOW
    assert charlm_rule.fit_window(None, 200, "c") == 199 // STREAM_WINDOWS
    assert charlm_rule.fit_window(None, 2 * MIN_WINDOW + 1, "c") == MIN_WINDOW
    assert charlm_rule.fit_window(5, 11, "c") == 5  # a window given is kept


@pytest.mark.parametrize("window, chars", [(None, 2 * MIN_WINDOW), (30, 60)])
def test_a_text_shorter_than_two_windows_is_refused_by_name(window, chars):
    with pytest.raises(CorpusError, match=r"notes\.txt: .* shorter than two windows"):
        charlm_rule.fit_window(window, chars, "notes.txt")


@pytest.mark.parametrize("chars", [17, 100, 2_431, 30_000, 10**6])
def test_every_stream_of_a_fitted_batch_holds_its_windows(chars):
    window = charlm_rule.fit_window(None, chars, "c")
    batch = charlm_rule.fit_batch(BATCH, window, chars)
    assert 1 <= batch <= BATCH
    per_stream = (chars - 1) // batch // window
    assert per_stream >= min(STREAM_WINDOWS, 2)
    if batch < BATCH:  # shrunk: one more stream would not hold STREAM_WINDOWS windows
        assert (chars - 1) // (batch + 1) // window < STREAM_WINDOWS or per_stream < STREAM_WINDOWS


def test_passes_come_from_the_first_limit():
    config = charlm.Config(steps=1000, minutes=0.0)
    assert charlm_rule.passes_of(config, 64_000, 10, 64, None) == pytest.approx(10.0)
    config = charlm.Config(steps=1000, epochs=3.0, minutes=0.0)
    assert charlm_rule.passes_of(config, 64_000, 10, 64, None) == pytest.approx(3.0)
    config = charlm.Config(minutes=2.0)
    assert charlm_rule.passes_of(config, 60_000, 10, 64, rate=1000.0) == pytest.approx(2.0)


def test_dropout_grows_with_the_passes_and_a_run_without_a_limit_gets_the_most():
    drops = [charlm_rule.dropout_by_passes(p) for p in (0.5, 2, 5, 10, 50, 500)]
    assert drops == sorted(drops) and drops[0] == 0.0 and drops[-1] > 0
    assert charlm_rule.dropout_by_passes(math.nan) == drops[-1]


def test_a_run_of_few_steps_trains_on_a_smaller_batch_for_more_of_them():
    chars, asked = 1_000_000, []

    def rate(batch, window):
        asked.append(batch)
        return 20_000.0

    choice = charlm_rule.choose(charlm.Config(minutes=1.5), chars, "c", rate)
    assert choice.batch_size == charlm_rule.MIN_BATCH and asked == [128, 64, 32]
    assert choice.dropout == charlm_rule.dropout_by_passes(choice.passes)
    assert any("for more steps" in note for note in choice.notes)
    asked.clear()  # 20k characters a second for 20 minutes: 2,930 steps of 128, 5,859 of 64
    choice = charlm_rule.choose(charlm.Config(minutes=20.0), chars, "c", rate)
    steps = choice.passes * chars / (choice.batch_size * choice.window)
    assert choice.batch_size == 64 and asked == [128, 64] and steps >= charlm_rule.MIN_STEPS
    long = charlm_rule.choose(charlm.Config(minutes=600.0), chars, "c", rate)
    assert long.batch_size == BATCH and long.dropout >= choice.dropout > 0


def test_under_a_steps_limit_the_batch_stays_whatever_the_passes():
    choice = charlm_rule.choose(charlm.Config(steps=50, minutes=0.0), 10**6, "c", never_timed)
    assert choice.batch_size == BATCH and choice.dropout == 0.0


def test_flags_the_user_sets_are_kept():
    config = charlm.Config(minutes=1.5, batch_size=7, window=9, dropout=0.35)
    choice = charlm_rule.choose(config, 1_000_000, "c", never_timed)
    assert (choice.batch_size, choice.window, choice.dropout) == (7, 9, 0.35)


def test_a_steps_limit_needs_no_timing():
    config = charlm.Config(steps=10_000, minutes=0.0)
    choice = charlm_rule.choose(config, 100_000, "c", never_timed)
    assert choice.passes == pytest.approx(10_000 * BATCH * WINDOW / 100_000)
    assert choice.dropout == charlm_rule.DROPOUT_BY_PASSES[-1][1]


def test_a_text_of_2701_characters_trains_with_the_defaults_and_samples(tmp_path):
    corpus = tmp_path / "short.txt"
    words = "the quick brown fox jumps over the lazy dog and runs away. "
    corpus.write_text((words * 50)[:2701])
    out, lines = tmp_path / "run", io.StringIO()
    config = charlm.Config(data=str(corpus), minutes=0.05, out=str(out), device="cpu")
    trainer = charlm.train(config, progress=Progress(lines))
    assert trainer.step > 0 and math.isfinite(trainer.best)
    said = lines.getvalue()
    assert "GRU 1x384" in said and "a short text" in said and "2,431 characters" in said
    assert config.batch_size * config.window < 2431  # what was picked, saved for the run
    text = charlm.sample(out, prime="the ", length=30, out=io.StringIO())
    assert len(text) == 34
