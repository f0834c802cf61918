"""The forecast task's data: a series with its target and covariate columns, split in time
into train, validation and test parts, scaled by the training part alone, with the origins
of each part's windows (:class:`Prepared`); and the training windows of each step.

A window at origin t reads rows [t - W, t) and forecasts rows [t, t + H); its inputs may
reach back into the part before, its targets never leave its own part
(:func:`rnnkit.data.series.window_origins`).

Shape letters: W input window, H horizon, B batch (windows), C input columns, N rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnnkit.data.parts import part
from rnnkit.data.series import (
    Scaler,
    Series,
    SeriesError,
    chronological_split,
    gather_windows,
    load_series,
    window_origins,
)
from rnnkit.tasks import forecast_metrics as metrics

if TYPE_CHECKING:
    from rnnkit.tasks.forecast import Config


@dataclass
class Prepared:
    """A series split in time, scaled by its training part, with the window origins."""

    series: Series  # targets first, then covariates, in the series' units
    targets: int  # how many leading columns are forecast
    scaled: np.ndarray  # (N, C) float32
    scaler: Scaler  # fitted on rows [0, train_end) only
    bounds: tuple[int, int]  # (train_end, val_end)
    origins: dict  # "train", "val", "test" -> forecast origins
    period: int  # seasonal period of seasonal naive and MASE


def pick_columns(config: Config, series: Series) -> tuple[list[str], list[str]]:
    names = [c.strip() for c in config.target.split(",") if c.strip()]
    targets = names or series.columns[:1]
    if config.covariates == "rest":
        return targets, [c for c in series.columns if c not in targets]
    return targets, [c.strip() for c in config.covariates.split(",") if c.strip()]


def part_origins(config: Config, series: Series, bounds: tuple[int, int]) -> dict:
    """Window origins of each part; a part too short for one window is an error."""
    train_end, val_end = bounds
    parts = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, len(series))}
    origins = {}
    for name, (start, end) in parts.items():
        origins[name] = window_origins(start, end, config.input_window, config.horizon)
        if len(origins[name]) == 0:
            raise SeriesError(
                f"{series.name}: too few rows for one {name} window: {len(series)} rows, the "
                f"{name} part is rows {start + 1}-{end}, and a window needs input_window + "
                f"horizon = {config.input_window} + {config.horizon} rows (inputs may reach "
                "back into the part before); lower --input-window or --horizon"
            )
    return origins


def prepare(config: Config, data: str = "", scaler: Scaler | None = None) -> Prepared:
    """Load ``data`` (default ``config.data``), split it, fit (or reuse) the scaler."""
    series = load_series(data or config.data, config.date)
    targets, covariates = pick_columns(config, series)
    series = series.select(targets + covariates)
    bounds = chronological_split(len(series), config.val_fraction, config.test_fraction)
    origins = part_origins(config, series, bounds)
    scaler = scaler or Scaler.fit(series.values[: bounds[0]])
    scaled = scaler.transform(series.values).astype(np.float32)
    period = config.period or metrics.detect_period(series.values[: bounds[0], 0])
    return Prepared(series, len(targets), scaled, scaler, bounds, origins, period)


def windows(prepared: Prepared, origins: np.ndarray, config: Config):
    inputs, targets = gather_windows(prepared.scaled, origins, config.input_window, config.horizon)
    return torch.from_numpy(inputs), torch.from_numpy(targets)  # (W, B, C), (H, B, C)


def batch_at(prepared: Prepared, config: Config, step: int, rank: int = 0, size: int = 1):
    """Training windows of step ``step``: a seeded shuffle of the training origins per epoch
    (windows are shuffled among themselves; time inside a window stays in order); under
    torchrun, process ``rank``'s part of them."""
    origins = prepared.origins["train"]
    per_epoch = max(len(origins) // config.batch_size, 1)
    epoch, slot = divmod(step, per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(len(origins))
    rows = part(order[slot * config.batch_size : (slot + 1) * config.batch_size], rank, size)
    chosen = origins[rows]
    return windows(prepared, chosen, config)
