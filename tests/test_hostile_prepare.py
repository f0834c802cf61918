"""Data that loads but is too little or too odd for a task: the task's ``prepare`` either
returns its parts or raises a :class:`DataError` naming the file, never an error from
inside numpy or torch (too few rows to split, one class, constant values, a window longer
than the series, ...)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import DataError
from rnnkit.tasks import charlm, classify, forecast, seqclass, tag, translate

FEWER = settings(max_examples=30)  # fewer than conftest.py's 50: each prepares a task
pytestmark = pytest.mark.usefixtures("one_thread_for_module")  # conftest.py


def prepared_or_named(prepare, config, path) -> bool:
    """True when ``prepare(config)`` worked; a DataError must name ``path``."""
    try:
        prepare(config)
    except DataError as err:
        assert str(path) in str(err)
        return False
    return True


def tag_case(tmp_path, n, t, classes, seed) -> bool:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, n)
    steps = int(lengths.sum())
    labels = rng.integers(0, classes, steps)
    path = tmp_path / "t.npz"
    np.savez(path, inputs=rng.standard_normal(steps), labels=labels, lengths=lengths)
    return prepared_or_named(tag.prepare, tag.Config(data=str(path)), path)


def seqclass_case(tmp_path, n, t, classes, constant, seed) -> bool:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, n)
    steps = int(lengths.sum())
    x = np.zeros(steps) if constant else rng.standard_normal(steps)
    path = tmp_path / "s.npz"
    np.savez(path, x=x, y=rng.integers(0, classes, n), lengths=lengths)
    return prepared_or_named(seqclass.prepare, seqclass.Config(data=str(path)), path)


def forecast_case(tmp_path, rows, window, horizon, scale) -> bool:
    path = tmp_path / "f.csv"
    values = [repr(float(scale * np.sin(i))) for i in range(rows)]  # not "np.float64(...)"
    path.write_text("value\n" + "".join(f"{v}\n" for v in values))
    config = forecast.Config(data=str(path), date="none", input_window=window, horizon=horizon)
    if not prepared_or_named(forecast.prepare, config, path):
        return False
    assert np.isfinite(forecast.prepare(config).scaled).all()
    return True


def classify_case(tmp_path, rows, classes, blank) -> bool:
    path = tmp_path / "c.csv"
    texts = ["" if blank and i % 3 == 0 else "word " * (i % 4) for i in range(rows)]
    path.write_text("text,label\n" + "".join(f"{t},{i % classes}\n" for i, t in enumerate(texts)))
    return prepared_or_named(classify.prepare, classify.Config(data=str(path), min_count=1), path)


def translate_case(tmp_path, pairs, repeated) -> bool:
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{'x' if repeated else i}\t{i} !\n" for i in range(pairs)))
    return prepared_or_named(translate.prepare, translate.Config(data=str(path)), path)


def charlm_case(tmp_path, lines, window, batch) -> bool:
    path = tmp_path / "c.txt"
    path.write_text("ab\n" * lines)
    config = charlm.Config(data=str(path), window=window, batch_size=batch)
    return prepared_or_named(charlm.prepare, config, path)


@FEWER
@given(n=st.integers(1, 8), t=st.integers(1, 5), classes=st.integers(1, 3), seed=st.integers(0, 9))
def test_tag_prepares_any_few_sequences_or_names_the_file(tmp_path, n, t, classes, seed):
    tag_case(tmp_path, n, t, classes, seed)


@FEWER
@given(
    n=st.integers(1, 10),
    t=st.integers(1, 5),
    classes=st.integers(1, 3),
    constant=st.booleans(),
    seed=st.integers(0, 9),
)
def test_seqclass_prepares_any_few_cases_or_names_the_file(tmp_path, n, t, classes, constant, seed):
    seqclass_case(tmp_path, n, t, classes, constant, seed)


@FEWER
@given(
    rows=st.integers(1, 40),
    window=st.integers(1, 12),
    horizon=st.integers(1, 6),
    scale=st.sampled_from([0.0, 1e-300, 1.0, 1e300]),
)
def test_forecast_prepares_any_short_or_flat_series_or_names_the_file(
    tmp_path, rows, window, horizon, scale
):
    forecast_case(tmp_path, rows, window, horizon, scale)


@FEWER
@given(rows=st.integers(1, 30), classes=st.integers(1, 3), blank=st.booleans())
def test_classify_prepares_any_few_rows_or_names_the_file(tmp_path, rows, classes, blank):
    classify_case(tmp_path, rows, classes, blank)


@FEWER
@given(pairs=st.integers(1, 30), repeated=st.booleans())
def test_translate_prepares_any_few_pairs_or_names_the_file(tmp_path, pairs, repeated):
    translate_case(tmp_path, pairs, repeated)


@FEWER
@given(lines=st.integers(1, 60), window=st.integers(1, 20), batch=st.integers(1, 8))
def test_charlm_prepares_any_short_corpus_or_names_the_file(tmp_path, lines, window, batch):
    charlm_case(tmp_path, lines, window, batch)


@pytest.mark.parametrize(
    "case, ample",
    [
        (tag_case, dict(n=8, t=5, classes=2, seed=0)),
        (seqclass_case, dict(n=10, t=5, classes=2, constant=False, seed=0)),
        (forecast_case, dict(rows=40, window=6, horizon=2, scale=1.0)),
        (classify_case, dict(rows=30, classes=2, blank=False)),
        (translate_case, dict(pairs=30, repeated=False)),
        (charlm_case, dict(lines=60, window=8, batch=2)),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_the_largest_plain_case_of_each_task_prepares(tmp_path, case, ample):
    """The properties above would hold if prepare refused everything: at the top of each
    range, with nothing odd in it, the data must prepare."""
    assert case(tmp_path, **ample)
