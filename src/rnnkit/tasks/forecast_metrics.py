"""Forecast accuracy, the two baselines every forecast is compared with, and the season.

Metrics take ``actual`` and ``forecast`` arrays of the same shape (any shape: one window or
many stacked), in the series' own units:
- MAE and RMSE: mean absolute error and root mean squared error;
- sMAPE: the symmetric mean absolute percentage error of the M4 competition (Makridakis et
  al. 2020, eq. 1), ``200 * mean(|y - f| / (|y| + |f|))``, in percent; a step where both
  ``y`` and ``f`` are 0 counts as 0;
- MASE: MAE divided by the in-sample MAE of the seasonal naive forecast on the training
  part (Hyndman & Koehler 2006, section 3.4; with the seasonal period ``m`` as M4 does,
  ``m = 1`` for a series without a season). Comparing two forecasts' MASE on the same
  windows compares their MAE; below 1 means better than that in-sample one-step benchmark.

Baselines (Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", section 5.2):
naive repeats the last value; seasonal naive repeats the last full season.
"""

from __future__ import annotations

import numpy as np


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    _same_shape(actual, forecast)
    return float(np.mean(np.abs(actual - forecast)))


def rmse(actual: np.ndarray, forecast: np.ndarray) -> float:
    _same_shape(actual, forecast)
    return float(np.sqrt(np.mean((actual - forecast) ** 2)))


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    _same_shape(actual, forecast)
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(
        np.abs(actual - forecast),
        denominator,
        out=np.zeros_like(denominator, dtype=float),
        where=denominator > 0,
    )
    return float(200.0 * np.mean(ratio))


def mase_scale(insample: np.ndarray, period: int = 1) -> float:
    """In-sample MAE of the seasonal naive forecast: mean |y_t - y_{t-m}| over the training part."""
    insample = np.asarray(insample, dtype=float)
    if period < 1 or len(insample) <= period:
        raise ValueError(
            f"MASE needs more than period={period} training values, got {len(insample)}"
        )
    scale = float(np.mean(np.abs(insample[period:] - insample[:-period])))
    if scale == 0.0:
        raise ValueError("MASE is undefined: the training part is constant at this period")
    return scale


def mase(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, period: int = 1) -> float:
    return mae(actual, forecast) / mase_scale(insample, period)


def all_metrics(actual: np.ndarray, forecast: np.ndarray, scale: float) -> dict:
    """MAE, RMSE, MASE (with a precomputed ``mase_scale``) and sMAPE in one dict."""
    error = mae(actual, forecast)
    return {
        "mae": error,
        "rmse": rmse(actual, forecast),
        "mase": error / scale,
        "smape": smape(actual, forecast),
    }


def score(forecasts: dict, insample: np.ndarray, period: int) -> dict:
    """Metrics of every forecaster in ``forecasts`` (name -> (K, H, Ct) array, beside
    ``"actual"``), each column scaled by its own training part ``insample`` (N, Ct) for
    MASE, then averaged over the columns."""
    scales = [mase_scale(insample[:, c], period) for c in range(insample.shape[1])]
    result = {}
    for name, predicted in forecasts.items():
        if name == "actual":
            continue
        per_column = [
            all_metrics(forecasts["actual"][..., c], predicted[..., c], scale)
            for c, scale in enumerate(scales)
        ]
        result[name] = {k: float(np.mean([m[k] for m in per_column])) for k in per_column[0]}
    return result


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last value: history (..., T) -> (..., horizon)."""
    history = np.asarray(history)
    return np.repeat(history[..., -1:], horizon, axis=-1)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeat the last ``period`` values: step h (from 0) of the forecast is y_{T-m + h mod m}."""
    history = np.asarray(history)
    if not 1 <= period <= history.shape[-1]:
        raise ValueError(
            f"seasonal naive needs 1 <= period <= history length ({history.shape[-1]}), "
            f"got period {period}"
        )
    season = history[..., -period:]  # (..., m)
    return season[..., np.arange(horizon) % period]  # (..., horizon)


def autocorrelation(values: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 0..max_lag (the biased estimator, as statsmodels' acf)."""
    x = np.asarray(values, dtype=float) - np.mean(values)
    denominator = float(np.dot(x, x))
    if denominator == 0.0:
        return np.zeros(max_lag + 1)
    return np.array([np.dot(x[: len(x) - k], x[k:]) / denominator for k in range(max_lag + 1)])


def detect_period(values: np.ndarray, max_lag: int = 0, threshold: float = 0.2) -> int:
    """The seasonal period: the lag of the highest autocorrelation peak once the trend is gone.

    The trend is a least-squares quadratic in time, subtracted first: a trend's slowly decaying
    autocorrelation would otherwise hide the seasonal peak (Hyndman & Athanasopoulos, section
    2.8). First differences, the textbook's other detrender, leave weekly noise whose short
    lags outscore the season. A peak is a lag >= 2 whose autocorrelation is above both
    neighbours and above ``threshold``; with none, returns 1 (no season). ``max_lag``
    defaults to a third of the series.
    """
    values = np.asarray(values, dtype=float)
    max_lag = min(max_lag or len(values) // 3, len(values) - 2)
    if max_lag < 3:
        return 1
    time = np.arange(len(values))
    residual = values - np.polyval(np.polyfit(time, values, 2), time)
    acf = autocorrelation(residual, max_lag)
    peaks = [k for k in range(2, max_lag) if acf[k - 1] < acf[k] > acf[k + 1]]
    peaks = [k for k in peaks if acf[k] > threshold]
    return max(peaks, key=lambda k: acf[k]) if peaks else 1


def table(result: dict) -> str:
    """The test metrics of a forecast run, one line per forecaster."""
    lines = [
        f"test: {result['windows']} windows of horizon {result['horizon']} on "
        f"{result['series']}, seasonal period {result['period']}",
        f"{'':16}{'MAE':>10}{'RMSE':>10}{'MASE':>8}{'sMAPE %':>9}",
    ]
    for name in ("model", "ets", "ensemble", "naive", "seasonal_naive"):
        m = result[name]
        lines.append(f"{name:16}{m['mae']:10.4g}{m['rmse']:10.4g}{m['mase']:8.3f}{m['smape']:9.3f}")
    choice = result["choice"]
    lines.append(f"ets: {'; '.join(choice['ets'])}")
    lines.append(f"kept: {choice['kept']} ({choice['reason']})")
    return "\n".join(lines)


def _same_shape(actual: np.ndarray, forecast: np.ndarray) -> None:
    if np.shape(actual) != np.shape(forecast):
        raise ValueError(
            f"actual and forecast must have the same shape, got {np.shape(actual)} "
            f"and {np.shape(forecast)}"
        )
