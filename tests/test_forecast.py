"""Forecasting: metrics and baselines by hand, no leakage, rollout, the run end to end."""

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from rnnkit.data.series import SeriesError
from rnnkit.tasks import forecast
from rnnkit.tasks import forecast_metrics as metrics
from rnnkit.training.trainer import Progress

# --- metrics and baselines against values worked out by hand ---


def test_metrics_by_hand():
    actual, predicted = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    assert metrics.mae(actual, predicted) == pytest.approx(2 / 3)
    assert metrics.rmse(actual, predicted) == pytest.approx(math.sqrt(2 / 3))
    # 200/3 * (|1-2|/(1+2) + 0 + |3-2|/(3+2))
    assert metrics.smape(actual, predicted) == pytest.approx(200 / 3 * (1 / 3 + 1 / 5))
    assert metrics.smape(np.zeros(2), np.zeros(2)) == 0.0
    # in-sample naive errors of [1, 3, 2, 4]: 2, 1, 2 -> scale 5/3; MAE 2/3 -> MASE 0.4
    assert metrics.mase(actual, predicted, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.4)
    # period 2: |2-1|, |4-3| -> scale 1
    assert metrics.mase_scale(np.array([1.0, 3.0, 2.0, 4.0]), 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.mae(actual, predicted[:2])


def test_score_scales_each_column_by_its_own_training_part():
    actual = np.array([[[1.0, 10.0], [2.0, 20.0]]])  # (K=1, H=2, Ct=2)
    forecasts = {"actual": actual, "flat": np.array([[[2.0, 10.0], [2.0, 10.0]]])}
    insample = np.array([[0.0, 0.0], [1.0, 5.0], [0.0, 0.0]])  # naive scales 1 and 5
    result = metrics.score(forecasts, insample, period=1)
    # column 0: MAE 0.5, MASE 0.5; column 1: MAE 5, MASE 1 -> means 2.75 and 0.75
    assert result["flat"]["mae"] == pytest.approx(2.75)
    assert result["flat"]["mase"] == pytest.approx(0.75)
    assert set(result) == {"flat"}


def test_baselines_by_hand():
    history = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert metrics.naive(history, 3).tolist() == [5, 5, 5]
    assert metrics.seasonal_naive(history, 5, 2).tolist() == [4, 5, 4, 5, 4]
    assert metrics.seasonal_naive(np.stack([history, -history]), 2, 3).shape == (2, 2)


def test_detect_period_finds_a_season_under_a_trend():
    t = np.arange(240)
    rng = np.random.default_rng(0)
    seasonal = np.sin(2 * np.pi * t / 12) + 0.2 * rng.normal(size=240) + 0.05 * t
    assert metrics.detect_period(seasonal) == 12
    assert metrics.detect_period(rng.normal(size=240)) == 1


# --- a small series on disk ---


def series_csv(tmp_path, rows: int = 120, covariate: bool = False) -> str:
    """A monthly seasonal series with a trend (and a covariate column)."""
    t = np.arange(rows)
    y = 10 + 0.1 * t + np.sin(2 * np.pi * t / 12)
    lines = ["date,y" + (",x" if covariate else "")]
    for i in range(rows):
        date = f"{2000 + i // 12}-{i % 12 + 1:02d}-01"
        lines.append(
            f"{date},{y[i]:.4f}" + (f",{np.cos(2 * np.pi * i / 12):.4f}" if covariate else "")
        )
    path = tmp_path / "series.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def tiny_config(tmp_path, **changes) -> forecast.Config:
    settings = dict(
        input_window=12,
        horizon=4,
        hidden=8,
        steps=3,
        minutes=0.0,
        eval_every=3,
        warmup=1,
        batch_size=16,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    if "data" not in changes:
        settings["data"] = series_csv(tmp_path)
    return forecast.Config(**{**settings, **changes})


def test_scaler_never_sees_validation_or_test_values(tmp_path):
    config = tiny_config(tmp_path)
    prepared = forecast.prepare(config)
    train_end, val_end = prepared.bounds
    honest = prepared.series.values[:train_end]
    assert prepared.scaler.mean == pytest.approx(honest.mean(axis=0))
    assert prepared.scaler.std == pytest.approx(honest.std(axis=0))
    # Poison everything after the training part: the scaler and every training batch must
    # be unchanged, and no training window may read a poisoned row.
    poisoned = prepared.series.values.copy()
    poisoned[train_end:] = 1e6
    path = tmp_path / "poisoned.csv"
    dates = [d.strftime("%Y-%m-%d") for d in prepared.series.dates]
    path.write_text(
        "date,y\n" + "".join(f"{d},{v[0]}\n" for d, v in zip(dates, poisoned, strict=True))
    )
    leaked = forecast.prepare(dataclasses.replace(config, data=str(path)))
    assert leaked.scaler.mean == pytest.approx(prepared.scaler.mean)
    for step in range(5):
        inputs, targets = forecast.batch_at(leaked, config, step)
        clean_inputs, clean_targets = forecast.batch_at(prepared, config, step)
        assert torch.equal(inputs, clean_inputs) and torch.equal(targets, clean_targets)
    assert leaked.origins["train"].max() + config.horizon <= train_end


def test_parts_are_in_time_order_and_never_mixed(tmp_path):
    prepared = forecast.prepare(tiny_config(tmp_path))
    train_end, val_end = prepared.bounds
    o = prepared.origins
    assert o["train"].max() + 4 <= train_end <= o["val"].min()
    assert o["val"].max() + 4 <= val_end <= o["test"].min()
    assert o["test"].max() + 4 == len(prepared.series)


def test_too_few_rows_names_the_file_and_the_window(tmp_path):
    config = tiny_config(tmp_path, data=series_csv(tmp_path, rows=20))
    with pytest.raises(
        SeriesError, match=r"series\.csv: too few rows for one train window: 20 rows"
    ):
        forecast.prepare(config)


# --- direct and recursive forecasts ---


def test_recursive_rollout_shape_and_equivalence_with_a_fresh_run(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(tmp_path, strategy="recursive")
    model = forecast.Forecaster(2, 1, config).eval()
    window = torch.randn(12, 3, 2)  # (W, B, C)
    with torch.no_grad():
        steps = forecast.rollout(model, window, 5)  # (5, B, C)
        assert steps.shape == (5, 3, 2)
        assert torch.allclose(forecast.rollout(model, window, 2), steps[:2])
        # Step 3 from the carried state equals running the network afresh over the window
        # followed by the two fed-back predictions.
        base = window[-1]
        fed = torch.cat([window, steps[:2]]) - base
        fresh, _ = model(fed)
        assert torch.allclose(fresh[-1] + base, steps[2], atol=1e-5)
        assert forecast.forecast(model, window, 5).shape == (5, 3, 1)


def test_direct_forecast_shape_and_longer_horizons_block_by_block(tmp_path):
    torch.manual_seed(0)
    model = forecast.Forecaster(1, 1, tiny_config(tmp_path)).eval()
    window = torch.randn(12, 2, 1)
    with torch.no_grad():
        first = forecast.direct(model, window)
        assert first.shape == (4, 2, 1)
        longer = forecast.forecast(model, window, 6)
        assert longer.shape == (6, 2, 1) and torch.equal(longer[:4], first)
        shifted = torch.cat([window, first])[-12:]
        assert torch.allclose(longer[4:], forecast.direct(model, shifted)[:2])
    with_covariates = forecast.Forecaster(2, 1, tiny_config(tmp_path)).eval()
    with pytest.raises(ValueError, match="at most its trained horizon 4"):
        forecast.forecast(with_covariates, torch.randn(12, 1, 2), 6)


def test_relative_windows_make_the_forecast_follow_the_level(tmp_path):
    model = forecast.Forecaster(1, 1, tiny_config(tmp_path)).eval()
    window = torch.randn(12, 1, 1)
    with torch.no_grad():
        moved = forecast.direct(model, window + 5.0) - forecast.direct(model, window)
    assert torch.allclose(moved, torch.full_like(moved, 5.0), atol=1e-5)


# --- the run end to end ---


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_train_test_predict_and_eval(tmp_path, strategy):
    data = series_csv(tmp_path, covariate=True)
    config = tiny_config(tmp_path, data=data, strategy=strategy, covariates="rest")
    forecast.train(config, progress=Progress(io.StringIO()))
    run = tmp_path / "run"
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["period"] == 12 and result["windows"] == 15
    assert set(result["model"]) == {"mae", "rmse", "mase", "smape"}
    assert (run / "forecast.png").stat().st_size > 0
    path, rows = forecast.predict(run, config.data, horizon=4 if strategy == "direct" else 7)
    table = list(csv.reader(path.open()))
    assert table[0] == ["date", "y"] and table[1][0] == "2010-01-01"
    assert len(rows) == len(table) - 1
    scores = forecast.evaluate(run, config.data)
    assert scores["model_mae"] == pytest.approx(result["model"]["mae"], rel=1e-5)


def test_baselines_in_the_run_are_last_value_and_last_season(tmp_path):
    config = tiny_config(tmp_path, period=3)
    prepared = forecast.prepare(config)
    model = forecast.Forecaster(1, 1, config).eval()
    made = forecast.test_forecasts(model, prepared, config, forecast.fit_ets(prepared))
    origin, values = prepared.origins["test"][0], prepared.series.values[:, 0]
    assert made["naive"][0, :, 0].tolist() == [values[origin - 1]] * 4
    season = values[origin - 3 : origin]
    assert made["seasonal_naive"][0, :, 0].tolist() == [*season, season[0]]
    assert made["actual"][0, :, 0].tolist() == values[origin : origin + 4].tolist()
