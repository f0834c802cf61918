"""Exponential smoothing in the forecast run: the recursions against statsmodels, the
baseline against naive, the choice on validation, the saved form reloaded."""

import csv
import io
import json
import warnings

import numpy as np
import pytest
from test_forecast import series_csv, tiny_config  # tests/test_forecast.py

from rnnkit.tasks import forecast
from rnnkit.tasks import forecast_ets as ets
from rnnkit.tasks import forecast_metrics as metrics
from rnnkit.training.trainer import Progress


def seasonal(rows: int = 120, noise: float = 0.05) -> np.ndarray:
    """Monthly, trending, with a season that grows with the level; a little noise."""
    t = np.arange(rows)
    rng = np.random.default_rng(0)
    return (10 + 0.1 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + noise * rng.normal(size=rows)


@pytest.mark.parametrize("index", range(9))
def test_recursions_equal_statsmodels_with_the_same_parameters(index):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = seasonal()
    form = ets.forms(y[:96], 12)[index]
    spec = ets.fit_form(y[:96], form, 12)
    known = dict(initial_level=spec["level"])
    if form["trend"]:
        known["initial_trend"] = spec["slope"]
    if form["seasonal"]:
        known["initial_seasonal"] = spec["season"]
    model = ExponentialSmoothing(
        y[:96],
        trend=form["trend"],
        damped_trend=form["damped"],
        seasonal=form["seasonal"],
        seasonal_periods=12 if form["seasonal"] else None,
        initialization_method="known",
        **known,
    )
    fixed = dict(smoothing_level=spec["alpha"])
    if form["trend"]:
        fixed["smoothing_trend"] = spec["beta"]
    if form["damped"]:
        fixed["damping_trend"] = spec["phi"]
    if form["seasonal"]:
        fixed["smoothing_seasonal"] = spec["gamma"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(**fixed, optimized=False)
    mine = ets.rolling_forecasts(spec, y, [96], 14)  # (1, 14)
    assert mine.shape == (1, 14)
    assert mine[0] == pytest.approx(result.forecast(14), rel=1e-9)
    one_step = ets.rolling_forecasts(spec, y, np.arange(1, 96), 1)[:, 0]
    assert one_step == pytest.approx(result.fittedvalues[1:], rel=1e-9)


def test_forms_skip_a_multiplicative_season_below_zero_and_a_short_series():
    y = seasonal()
    assert {f["seasonal"] for f in ets.forms(y, 12)} == {None, "add", "mul"}
    assert {f["seasonal"] for f in ets.forms(y - 20, 12)} == {None, "add"}
    assert {f["seasonal"] for f in ets.forms(y[:20], 12)} == {None}
    assert [(f["trend"], f["damped"]) for f in ets.forms(y, 1)] == [
        (None, False),
        ("add", False),
        ("add", True),
    ]


def test_ets_beats_naive_and_seasonal_naive_on_a_clean_seasonal_series():
    y = seasonal()
    spec = ets.fit(y[:96], 12)
    assert spec["seasonal"] is not None
    origins = np.arange(96, 109)
    actual = y[origins[:, None] + np.arange(12)]  # (13, 12)
    history = y[origins[:, None] + np.arange(-12, 0)]  # (13, 12)
    smoothed = ets.rolling_forecasts(spec, y, origins, 12)
    assert smoothed.shape == actual.shape
    error = metrics.mae(actual, smoothed)
    assert error < 0.5 * metrics.mae(actual, metrics.seasonal_naive(history, 12, 12))
    assert error < 0.5 * metrics.mae(actual, metrics.naive(history, 12))


def test_choose_keeps_the_lowest_validation_error_unless_told():
    assert ets.choose({"rnn": 2.0, "ets": 1.0, "ensemble": 1.5})[0] == "ets"
    assert ets.choose({"rnn": 0.5, "ets": 1.0, "ensemble": 0.7})[0] == "rnn"
    kept, reason = ets.choose({"rnn": 1.0, "ets": 1.0, "ensemble": 0.8})
    assert kept == "ensemble" and "ensemble 0.8" in reason and "rnn 1" in reason
    assert ets.choose({"rnn": 9.0, "ets": 1.0, "ensemble": 5.0}, "rnn") == ("rnn", "--model rnn")


@pytest.mark.parametrize("offset, kept", [(0.0, "rnn"), (100.0, "ets")])
def test_the_run_chooses_on_validation(tmp_path, monkeypatch, offset, kept):
    """A recurrent model that forecasts validation exactly is kept; one far off is not."""
    config = tiny_config(tmp_path, model="auto")
    prepared = forecast.prepare(config)

    def faked(model, prepared, config, part):
        return forecast.actual_values(prepared, part, config.horizon) + offset

    monkeypatch.setattr(forecast, "model_forecasts", faked)
    model = forecast.Forecaster(1, 1, config).eval()
    choice = forecast.choose(model, prepared, config, forecast.fit_ets(prepared))
    assert choice["kept"] == kept
    assert choice["validation_mae"]["rnn"] == pytest.approx(offset)


def test_the_run_names_the_kept_model_and_predicts_with_the_saved_smoothing(tmp_path):
    config = tiny_config(tmp_path, model="ets")
    forecast.train(config, progress=Progress(io.StringIO()))
    run = tmp_path / "run"
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["choice"]["kept"] == "ets" and result["kept"] == result["ets"]
    assert set(result["choice"]["validation_mae"]) == {"rnn", "ets", "ensemble"}
    assert result["model"]["mase"] > 0  # the recurrent model is always scored
    saved = json.loads((run / "ets.json").read_text())
    refit = forecast.fit_ets(forecast.prepare(config))
    assert saved["columns"] == refit  # the fit is deterministic; JSON keeps every digit
    # a new series: the saved parameters are filtered over its history
    new = series_csv(tmp_path / "..", rows=100)
    path, _ = forecast.predict(run, new, horizon=6)
    written = [float(row[1]) for row in list(csv.reader(path.open()))[1:]]
    values = forecast.load_series(new, "auto").values
    expected = ets.forecasts(refit, values, [len(values)], 6)[0, :, 0]
    assert written == pytest.approx(expected, rel=1e-4)
    scores = forecast.evaluate(run, config.data)
    assert scores["ets_mae"] == pytest.approx(result["ets"]["mae"], rel=1e-6)


def test_a_run_without_ets_json_keeps_its_recurrent_model(tmp_path):
    config = tiny_config(tmp_path, model="ets")
    forecast.train(config, progress=Progress(io.StringIO()))
    run = tmp_path / "run"
    (run / "ets.json").unlink()
    path, rows = forecast.predict(run, config.data)
    assert len(rows) == config.horizon
    assert forecast.evaluate(run, config.data)["ets_mae"] > 0
