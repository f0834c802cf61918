"""Exponential smoothing, the statistician's baseline of every forecast run, and the choice
between it and the recurrent model.

:func:`fit` fits statsmodels' Holt-Winters ``ExponentialSmoothing`` on the training part in a
few forms (no trend, an additive trend or a damped one; no season, an additive one, or,
for a positive series, a multiplicative one) and keeps the form of lowest AIC (Hyndman &
Athanasopoulos, "Forecasting: Principles and Practice", sections 8.3, 8.6 and 7.5). The form,
smoothing parameters and initial states are plain numbers, saved as JSON.

:func:`rolling_forecasts` forecasts every window from the data before its origin by running
the smoothing recursions with those fixed parameters over the series once (statsmodels'
component form, ``holtwinters/model.py``); parameters are not refitted per window, so the
test windows never tune them, and a new series is filtered the same way.

:func:`choose` keeps the recurrent model, the smoothing or their mean, whichever has the
lowest validation MAE (never the test's).

Shape letters: N rows, K windows, H horizon, Ct target columns, m seasonal period.
"""

from __future__ import annotations

import warnings

import numpy as np

KEPT = ("rnn", "ets", "ensemble")  # the forecasters a run may keep


def forms(train: np.ndarray, period: int) -> list[dict]:
    """The candidate forms: no, additive or damped trend, times no, additive or multiplicative
    season (a season only with two full ones in the training part; multiplicative only if
    positive)."""
    seasons = [None]
    if period > 1 and len(train) >= 2 * period:
        seasons += ["add", "mul"] if np.min(train) > 0 else ["add"]
    trends = [(None, False), ("add", False), ("add", True)]  # (trend, damped)
    return [
        {"trend": trend, "damped": damped, "seasonal": season}
        for trend, damped in trends
        for season in seasons
    ]


def fit_form(train: np.ndarray, form: dict, period: int) -> dict:
    """Fit one form; its parameters and AIC as plain numbers. The initial states come from
    the first seasons (statsmodels' heuristic, Hyndman et al. 2008, section 2.6.1) where the
    series is long enough, since estimating m initial seasons takes seconds; else estimated."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    def fitted(initialization: str):
        model = ExponentialSmoothing(
            train,
            trend=form["trend"],
            damped_trend=form["damped"],
            seasonal=form["seasonal"],
            seasonal_periods=period if form["seasonal"] else None,
            initialization_method=initialization,
        )
        with warnings.catch_warnings():  # convergence notes of the optimiser
            warnings.simplefilter("ignore")
            return model.fit(use_brute=False)  # the grid of start values costs seconds

    try:
        result = fitted("heuristic" if form["seasonal"] else "estimated")
    except ValueError:  # too short for the heuristic
        result = fitted("estimated")
    p = result.params
    return {
        **form,
        "period": period if form["seasonal"] else 1,
        "alpha": float(p["smoothing_level"]),
        "beta": float(np.nan_to_num(p["smoothing_trend"])) if form["trend"] else 0.0,
        "gamma": float(np.nan_to_num(p["smoothing_seasonal"])) if form["seasonal"] else 0.0,
        "phi": float(p["damping_trend"]) if form["damped"] else 1.0,
        "level": float(p["initial_level"]),
        "slope": float(p["initial_trend"]) if form["trend"] else 0.0,
        "season": [float(s) for s in np.atleast_1d(p["initial_seasons"])]
        if form["seasonal"]
        else [],
        "aic": float(result.aic),
    }


def fit(train: np.ndarray, period: int) -> dict:
    """The form of lowest AIC fitted on ``train`` (N,); a form that fails to fit is skipped."""
    train = np.asarray(train, dtype=float)
    fitted = []
    for form in forms(train, period):
        try:
            fitted.append(fit_form(train, form, period))
        except (ValueError, np.linalg.LinAlgError):
            continue
    fitted = [f for f in fitted if np.isfinite(f["aic"])]
    if not fitted:
        raise ValueError(f"exponential smoothing: no form fits {len(train)} training values")
    return min(fitted, key=lambda f: f["aic"])


def states(spec: dict, values: np.ndarray):
    """Run the recursions over ``values`` (N,): level, slope after each row (N,) and the
    season (N + m,), where season[t + m] is the seasonal state after row t."""
    alpha, beta, gamma, phi = spec["alpha"], spec["beta"], spec["gamma"], spec["phi"]
    mul = spec["seasonal"] == "mul"
    m = spec["period"]
    season = np.empty(len(values) + m)
    season[:m] = spec["season"] if spec["seasonal"] else (1.0 if mul else 0.0)
    level, slope = np.empty(len(values)), np.empty(len(values))
    last_level, last_slope = spec["level"], spec["slope"]
    for t, y in enumerate(values):
        base = last_level + phi * last_slope  # level forecast from the row before
        s = season[t]
        level[t] = alpha * (y / s if mul else y - s) + (1 - alpha) * base
        slope[t] = beta * (level[t] - last_level) + (1 - beta) * phi * last_slope
        season[t + m] = gamma * (y / base if mul else y - base) + (1 - gamma) * s
        last_level, last_slope = level[t], slope[t]
    return level, slope, season


def rolling_forecasts(spec: dict, values: np.ndarray, origins, horizon: int) -> np.ndarray:
    """Forecasts (K, H) of the ``horizon`` rows from each origin, from the rows before it."""
    level, slope, season = states(spec, np.asarray(values, dtype=float))
    last = np.asarray(origins) - 1  # (K,) the last row each forecast reads
    steps = np.arange(1, horizon + 1)
    damping = np.cumsum(spec["phi"] ** steps)  # phi + ... + phi^h
    trend = level[last, None] + damping * slope[last, None]  # (K, H)
    if not spec["seasonal"]:
        return trend
    m = spec["period"]
    s = season[last[:, None] + 1 + (steps - 1) % m]  # the season's last state at each step
    return trend * s if spec["seasonal"] == "mul" else trend + s


def forecasts(specs: list[dict], values: np.ndarray, origins, horizon: int) -> np.ndarray:
    """Forecasts (K, H, Ct) of every target column (N, Ct), one fitted form per column."""
    per_column = [rolling_forecasts(s, values[:, c], origins, horizon) for c, s in enumerate(specs)]
    return np.stack(per_column, axis=-1)


def choose(val_mae: dict, wanted: str = "auto") -> tuple[str, str]:
    """The forecaster kept, and why: ``wanted`` unless auto, else the lowest validation MAE
    among ``val_mae``'s rnn, ets and ensemble."""
    if wanted != "auto":
        return wanted, f"--model {wanted}"
    best = min(KEPT, key=lambda name: val_mae[name])
    others = ", ".join(f"{name} {val_mae[name]:.4g}" for name in KEPT if name != best)
    return best, f"lowest validation MAE: {best} {val_mae[best]:.4g} (vs {others})"


def describe(spec: dict) -> str:
    """'damped trend, mul season 12' and the like."""
    trend = ("damped trend" if spec["damped"] else "trend") if spec["trend"] else "no trend"
    season = f"{spec['seasonal']} season {spec['period']}" if spec["seasonal"] else "no season"
    return f"{trend}, {season}"
