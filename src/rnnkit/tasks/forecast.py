"""Time-series forecasting: the next ``horizon`` values of a series from its last ``input_window``.

The series (:mod:`rnnkit.data.series`) is cut in time into train, validation and test parts,
never shuffled across time; the scaler is fitted on the training part only
(:mod:`rnnkit.tasks.forecast_data`). Each window's inputs are the target columns and any
covariate columns; two ways to reach ``horizon`` steps:
- ``direct``: the last hidden state -> linear -> all ``horizon`` values at once (the
  "multiple-output" strategy of Ben Taieb et al. 2012, section 3.4);
- ``recursive``: the network predicts the next value of every input column, trained with
  teacher forcing; a forecast feeds each prediction back in, one step of the carried state
  per new value (section 3.1 of the same paper).
With ``relative`` the window is read relative to its last value and the forecast is added
back to it, so the network sees the same numbers at any level of a trending series (the
mean-shift half of RevIN, Kim et al. 2022, with the training scaler's spread kept).

After training, the best model and three baselines forecast the same test windows (naive: the
last value; seasonal naive: the last season, of a period given or detected; exponential
smoothing of the form of lowest AIC, fitted on the training part,
:mod:`rnnkit.tasks.forecast_ets`), each scored by MAE, RMSE, MASE and sMAPE
(:mod:`rnnkit.tasks.forecast_metrics`). The run keeps the recurrent model, the smoothing or
their mean, whichever forecasts the validation part best (``--model``), and saves the
smoothing's form and parameters in ``ets.json`` with the choice; it holds
``test_metrics.json`` and ``forecast.png``. ``rnnkit forecast RUN --data new.csv --horizon 12``
forecasts from the end of a file and writes a CSV.

Shape letters: W input window, H horizon, T time, B batch (windows), C input columns
(targets first, then covariates), Ct target columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data.files import read_json, write_json
from rnnkit.data.series import (
    Scaler,
    SeriesError,
    future_dates,
    load_series,
    write_forecast,
)
from rnnkit.models.loss import Loss
from rnnkit.scan import map_state
from rnnkit.tasks import forecast_ets as ets
from rnnkit.tasks import forecast_metrics as metrics
from rnnkit.tasks import run_config
from rnnkit.tasks.forecast_data import Prepared, batch_at, prepare, windows
from rnnkit.tasks.forecast_plot import plot_forecast
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "forecast"


@dataclass
class Config(TrainConfig):
    """``rnnkit train forecast``; the defaults forecast a quarter of weekly Mauna Loa CO2."""

    data: str = "co2"  # co2, sunspots, stocks:SYMBOL (AAPL, AMZN, GOOG, IBM, MSFT) or a CSV
    target: str = ""  # column(s) to forecast, comma-separated (default: the first value column)
    covariates: str = ""  # extra input columns, comma-separated ("rest": every other column)
    date: str = "auto"  # date column: a name, auto (one called date, year, ...) or none
    input_window: int = 104  # steps of history each forecast reads
    horizon: int = 13  # steps forecast from each origin
    strategy: Literal["direct", "recursive"] = "direct"  # all steps at once, or fed back
    relative: bool = True  # read each window relative to its last value (handles trends)
    period: int = 0  # seasonal period for seasonal naive and MASE (0: detect on training)
    cell: Literal["lstm", "gru", "rnn", "peephole"] = "gru"  # recurrent cell (lstm: sunspots worse)
    hidden: int = 64  # hidden units per layer
    layers: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # dropout between stacked layers
    batch_size: int = 64  # windows per training step
    val_fraction: float = 0.15  # the part after training, by time, for validation
    test_fraction: float = 0.15  # the last part, by time, for the final test
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # bf16 rounds away small changes
    warmup: int = 20  # steps of linear warm-up from 0 to lr
    minutes: float = 1.0  # stop after this much training time (0: no limit)
    eval_every: int = 100  # evaluate on validation every this many steps
    model: Literal["auto", "rnn", "ets", "ensemble"] = "auto"  # kept (auto: best on validation)


class Forecaster(nn.Module):
    """Recurrent layers over the window -> linear: H*Ct values (direct) or C (recursive)."""

    def __init__(self, columns: int, targets: int, config: Config):
        super().__init__()
        self.columns, self.targets, self.horizon = columns, targets, config.horizon
        self.strategy, self.relative = config.strategy, config.relative
        self.rnn = recurrent_layers(config, columns)
        outputs = config.horizon * targets if config.strategy == "direct" else columns
        self.head = nn.Linear(config.hidden, outputs)

    def forward(self, x: torch.Tensor, state=None):
        """x (T, B, C) -> outputs (T, B, H*Ct or C) and the final state."""
        x = x.float()
        if state is not None:  # under autocast the layer returns a lower-precision state
            state = map_state(lambda s: s.to(x.dtype), state)
        output, state = self.rnn(x, state)  # (T, B, hidden)
        return self.head(output).float(), state

    def loss(self, batch, carry=None) -> Loss:
        """Squared error in scaled units, summed: of the H-step forecast (direct), or of every
        next-step prediction along the window and its targets, teacher-forced (recursive)."""
        device = self.head.weight.device
        inputs, targets = (t.to(device) for t in batch)  # (W, B, C), (H, B, C)
        if self.strategy == "direct":
            predicted, truth = direct(self, inputs), targets[:, :, : self.targets]  # (H, B, Ct)
        else:
            sequence = torch.cat([inputs, targets]) - reference(self, inputs)  # (W+H, B, C)
            predicted, truth = self(sequence[:-1])[0], sequence[1:]
        total = F.mse_loss(predicted, truth, reduction="sum")
        return Loss(total, truth.numel(), targets.shape[0] * targets.shape[1])


def recurrent_layers(config: Config, input_size: int) -> nn.Module:
    between = config.dropout if config.layers > 1 else 0.0
    return rnnkit.layers.make_layer(
        config.cell, input_size, config.hidden, num_layers=config.layers, dropout=between
    )


def reference(model: Forecaster, window: torch.Tensor) -> torch.Tensor:
    """(B, C): the window's last value with ``relative``, else zero."""
    return window[-1] if model.relative else torch.zeros_like(window[-1])


def direct(model: Forecaster, window: torch.Tensor) -> torch.Tensor:
    """window (W, B, C) -> the model's H steps of the targets, (H, B, Ct)."""
    base = reference(model, window)
    output, _ = model(window - base)  # (W, B, H*Ct)
    steps = output[-1].view(-1, model.horizon, model.targets).transpose(0, 1)  # (H, B, Ct)
    return steps + base[:, : model.targets]


def rollout(model: Forecaster, window: torch.Tensor, horizon: int) -> torch.Tensor:
    """window (W, B, C) -> ``horizon`` steps of every column, (horizon, B, C), each step
    fed back as the next input from the carried state."""
    base = reference(model, window)
    output, state = model(window - base)  # (W, B, C)
    steps = [output[-1:]]  # (1, B, C) each, relative to base
    for _ in range(horizon - 1):
        output, state = model(steps[-1], state)
        steps.append(output)
    return torch.cat(steps) + base


def forecast(model: Forecaster, window: torch.Tensor, horizon: int) -> torch.Tensor:
    """(W, B, C) -> (horizon, B, Ct). A direct model asked for more than its trained horizon
    forecasts block by block, feeding its blocks back (only without covariates)."""
    if model.strategy == "recursive":
        return rollout(model, window, horizon)[:, :, : model.targets]
    blocks = [direct(model, window)]
    while sum(len(b) for b in blocks) < horizon:
        if model.columns != model.targets:
            raise ValueError(
                f"a direct model with covariates forecasts at most its trained horizon "
                f"{model.horizon}; train with --strategy recursive for longer ones"
            )
        window = torch.cat([window, blocks[-1]])[-len(window) :]
        blocks.append(direct(model, window))
    return torch.cat(blocks)[:horizon]


# --- training and testing (the data: forecast_data.py) ---


@torch.no_grad()
def val_loss(model: Forecaster, prepared: Prepared, config: Config, world=ALONE) -> float:
    """Mean squared error of the validation forecasts, scaled; under torchrun each process
    forecasts its share of the windows."""
    origins = world.share(prepared.origins["val"])
    total, count = 0.0, 0
    if origins:
        inputs, targets = windows(prepared, np.array(origins), config)
        device = model.head.weight.device
        predicted = forecast(model, inputs.to(device), config.horizon)  # (H, B, Ct)
        truth = targets[:, :, : model.targets].to(device)
        total, count = F.mse_loss(predicted, truth, reduction="sum").item(), truth.numel()
    total, count = world.sum(total, count)
    return total / count


def build_task(config: Config, prepared: Prepared) -> Task:
    torch.manual_seed(config.seed)
    model = Forecaster(prepared.scaled.shape[1], prepared.targets, config)
    per_epoch = max(len(prepared.origins["train"]) // config.batch_size, 1)
    return Task(
        model,
        lambda step, rank, size: batch_at(prepared, config, step, rank, size),
        lambda m, world: {"val_loss": val_loss(m, prepared, config, world)},
        per_epoch,
        unit="target values",
        loss_label="loss (mean squared error, scaled)",
    )


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or continue) the run in ``config.out``; then test it beside the baselines."""
    run_dir = Path(config.out or Path("runs") / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}")
    config.out = str(run_dir)
    prepared = prepare(config)
    trainer = Trainer(config, build_task(config, prepared), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        save_series_state(run_dir, prepared)
    trainer.fit()
    if trainer.world.rank == 0 and not trainer.interrupted:  # one process tests
        result = test(run_dir, prepared)
        write_json(run_dir / "test_metrics.json", result, indent=2)
        trainer.progress.line(metrics.table(result))
    return trainer


def save_series_state(run_dir: Path, prepared: Prepared) -> None:
    state = {
        "columns": prepared.series.columns,
        "targets": prepared.targets,
        "period": prepared.period,
        "scaler": prepared.scaler.to_dict(),
    }
    write_json(run_dir / "series.json", state, indent=2)


@torch.no_grad()
def model_forecasts(model: Forecaster, prepared: Prepared, config: Config, part: str):
    """The recurrent model's forecasts of a part's windows, in the series' units, (K, H, Ct)."""
    inputs, _ = windows(prepared, prepared.origins[part], config)
    predicted = forecast(model, inputs.to(model.head.weight.device), config.horizon).cpu()
    targets = list(range(prepared.targets))
    return prepared.scaler.inverse(predicted.numpy().transpose(1, 0, 2), targets)


def actual_values(prepared: Prepared, part: str, horizon: int) -> np.ndarray:
    """The values each window of a part forecasts, (K, H, Ct)."""
    origins = prepared.origins[part]
    return prepared.series.values[origins[:, None] + np.arange(horizon), : prepared.targets]


def fit_ets(prepared: Prepared) -> list[dict]:
    """One exponential smoothing per target column, fitted on the training part."""
    train = prepared.series.values[: prepared.bounds[0]]
    return [ets.fit(train[:, c], prepared.period) for c in range(prepared.targets)]


def ets_forecasts(specs: list[dict], prepared: Prepared, part: str, horizon: int):
    values = prepared.series.values[:, : prepared.targets]
    return ets.forecasts(specs, values, prepared.origins[part], horizon)  # (K, H, Ct)


def choose(model: Forecaster, prepared: Prepared, config: Config, specs: list[dict]) -> dict:
    """Validation MAE of the recurrent model, the smoothing and their mean; the one kept."""
    rnn = model_forecasts(model, prepared, config, "val")
    smoothed = ets_forecasts(specs, prepared, "val", config.horizon)
    actual = actual_values(prepared, "val", config.horizon)
    candidates = {"rnn": rnn, "ets": smoothed, "ensemble": (rnn + smoothed) / 2}
    val_mae = {name: metrics.mae(actual, f) for name, f in candidates.items()}
    kept, reason = ets.choose(val_mae, config.model)
    return {"kept": kept, "reason": reason, "validation_mae": val_mae}


def test_forecasts(model: Forecaster, prepared: Prepared, config: Config, specs: list[dict]):
    """Model, smoothing, their mean, naive and seasonal naive forecasts of every test window,
    in the series' units, each (K, H, Ct); and the actual values."""
    origins = prepared.origins["test"]
    if origins.min() < prepared.period:
        raise SeriesError(
            f"{prepared.series.name}: seasonal naive needs a full season ({prepared.period} "
            f"rows) before the first test window, which starts at row {origins.min() + 1}"
        )
    raw = prepared.series.values[:, : prepared.targets]  # (N, Ct)
    history = raw[origins[:, None] + np.arange(-prepared.period, 0)].transpose(0, 2, 1)
    rnn = model_forecasts(model, prepared, config, "test")
    smoothed = ets_forecasts(specs, prepared, "test", config.horizon)
    return {
        "actual": actual_values(prepared, "test", config.horizon),
        "model": rnn,
        "ets": smoothed,
        "ensemble": (rnn + smoothed) / 2,
        "naive": metrics.naive(history, config.horizon).transpose(0, 2, 1),
        "seasonal_naive": metrics.seasonal_naive(
            history, config.horizon, prepared.period
        ).transpose(0, 2, 1),
    }


def score_forecasts(forecasts: dict, prepared: Prepared) -> dict:
    insample = prepared.series.values[: prepared.bounds[0], : prepared.targets]
    return metrics.score(forecasts, insample, prepared.period)


def test(run_dir: Path, prepared: Prepared) -> dict:
    """Fit the smoothing, choose on validation, save both in ``ets.json``; score the best
    model of a run, the smoothing and the baselines on the test windows; draw a plot."""
    config, _, model = load_run(run_dir, "cpu")
    specs = fit_ets(prepared)
    choice = {**choose(model, prepared, config, specs), "ets": [ets.describe(s) for s in specs]}
    write_json(run_dir / "ets.json", {"kept": choice["kept"], "columns": specs}, indent=2)
    forecasts = test_forecasts(model, prepared, config, specs)
    plot_forecast(run_dir / "forecast.png", prepared, forecasts, config)
    scores = score_forecasts(forecasts, prepared)
    return {
        **scores,
        "kept": scores[KEPT_SCORES[choice["kept"]]],
        "choice": choice,
        "period": prepared.period,
        "windows": len(prepared.origins["test"]),
        "horizon": config.horizon,
        "series": prepared.series.name,
    }


KEPT_SCORES = {"rnn": "model", "ets": "ets", "ensemble": "ensemble"}  # kept -> its scores


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "auto"):
    """The config, series state (columns, scaler, period) and best model of a run."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    state = read_json(run_dir / "series.json")
    model = Forecaster(len(state["columns"]), state["targets"], config)
    load_model(model, run_dir / MODEL_FILE)
    return config, state, model.to(pick_device(device)).eval()


def evaluate(run_dir: Path, data: str, device: str = "cpu") -> dict:
    """Metrics of a run and the baselines on the test part of ``data``, split as the run
    splits its own series and scaled by the run's training scaler."""
    config, state, model = load_run(run_dir, device)
    prepared = prepare(config, data, Scaler.from_dict(state["scaler"]))
    prepared.period = state["period"]
    saved = saved_ets(run_dir)
    specs = saved["columns"] if saved["columns"] else fit_ets(prepared)
    scores = score_forecasts(test_forecasts(model, prepared, config, specs), prepared)
    flat = {f"{name}_{k}": v for name, m in scores.items() for k, v in m.items()}
    return {**flat, "windows": len(prepared.origins["test"])}


def saved_ets(run_dir: Path) -> dict:
    """The run's ``ets.json``: the forecaster kept and the smoothing of each target column;
    a run from before the smoothing has none and keeps its recurrent model."""
    path = Path(run_dir) / "ets.json"
    return read_json(path) if path.exists() else {"kept": "rnn", "columns": []}


@torch.no_grad()
def predict(run_dir: Path, data: str, horizon: int = 0, out: str = "", device: str = "cpu"):
    """Forecast ``horizon`` steps (default: the trained one) after the last row of ``data``
    with the forecaster the run kept, and write them as CSV to ``out`` (default
    ``forecast.csv`` in the run); return the path and the rows written. The smoothing is
    re-filtered over the whole of ``data`` with the run's parameters."""
    config, state, model = load_run(run_dir, device)
    series = load_series(data, config.date).select(state["columns"])
    horizon = horizon or config.horizon
    saved = saved_ets(run_dir)
    values = series.values[:, : state["targets"]]
    if saved["kept"] != "rnn":
        smoothed = ets.forecasts(saved["columns"], values, [len(series)], horizon)[0]  # (H, Ct)
    if saved["kept"] == "ets":
        predicted = smoothed
    else:
        predicted = rnn_predict(model, series, state, config, horizon, data)
        if saved["kept"] == "ensemble":
            predicted = (predicted + smoothed) / 2
    labels = future_dates(series.dates, horizon) if series.dates else None
    path = Path(out or Path(run_dir) / "forecast.csv")
    return path, write_forecast(path, series, predicted, labels)


def rnn_predict(model: Forecaster, series, state: dict, config: Config, horizon: int, data):
    """The recurrent model's (horizon, Ct) forecast after the last row of ``series``."""
    if len(series) < config.input_window:
        raise SeriesError(
            f"{data}: {len(series)} rows, too few for one window: the run reads the last "
            f"input_window = {config.input_window} rows"
        )
    scaler = Scaler.from_dict(state["scaler"])
    window = torch.tensor(scaler.transform(series.values[-config.input_window :]))
    window = window.float()[:, None].to(model.head.weight.device)  # (W, 1, C)
    targets = list(range(state["targets"]))
    return scaler.inverse(forecast(model, window, horizon)[:, 0].cpu().numpy(), targets)
