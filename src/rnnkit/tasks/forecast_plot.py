"""The forecast run's plot: the last test window, its history and every forecaster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnkit.tasks.forecast_data import Prepared

if TYPE_CHECKING:
    from rnnkit.tasks.forecast import Config

STYLES = {"model": "-", "ets": "-", "ensemble": "-", "naive": "--", "seasonal_naive": "-."}


def plot_forecast(path: Path, prepared: Prepared, forecasts: dict, config: Config) -> None:
    """The last test window: history, actual values, and each forecast, first target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin, H = int(prepared.origins["test"][-1]), config.horizon
    start = max(0, origin - max(config.input_window, 3 * H))
    dates = prepared.series.dates
    x = dates if dates else list(range(len(prepared.series)))
    fig, ax = plt.subplots(figsize=(9, 4))
    values = prepared.series.values[:, 0]
    ax.plot(x[start:origin], values[start:origin], color="black", label="history")
    after = slice(origin - 1, origin + H)  # from the last known value, so the lines join
    ax.plot(x[after], values[after], color="black", ls=":", label="actual")
    for name, style in STYLES.items():
        ax.plot(x[origin : origin + H], forecasts[name][-1, :, 0], ls=style, label=name)
    ax.set(title=f"{prepared.series.name}: {prepared.series.columns[0]}, last test window")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
