"""Time series: CSV reading, built-in series, chronological split, scaling, windows.

A series is a CSV file with an optional date column and one or more numeric value columns,
read by :mod:`rnnkit.data.tables` (so compressed files are read as they are). Every problem
is reported with the file, the line (the header is line 1) and the column: a missing column,
a value that is not a number, an empty or NaN value, a date that cannot be read, dates out of
order or repeated.

Built-in series, read offline from files that PyPI packages ship:
- ``co2``: Mauna Loa CO2, weekly, 1958-2001, from ``statsmodels`` (``datasets/co2/co2.csv``);
  its 59 empty weeks are filled by linear interpolation between their neighbours;
- ``sunspots``: yearly sunspot activity, 1700-2008, from ``statsmodels``;
- ``stocks:SYMBOL``: the monthly closing prices of AAPL, AMZN, GOOG, IBM or MSFT,
  2000-2010, from ``vega_datasets`` (``_data/stocks.csv``).

Splits are chronological and never shuffled across time: the first part trains, the next
validates, the last tests. The scaler is fitted on the training part only; a window whose
targets fall in the validation or test part may read inputs from the part before it, which
is the past and so no leak.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np

from rnnkit.data.tables import Table, TableError, read_table, short

DATE_NAMES = ("date", "time", "timestamp", "datetime", "year", "month", "week", "day", "ds")
DATE_FORMATS = ("%Y%m%d", "%Y", "%Y-%m", "%b %d %Y", "%d %b %Y", "%Y/%m/%d")


class SeriesError(TableError):
    """A series that cannot be used; the message names the file, the line and the problem."""


@dataclass
class Series:
    """Values of named columns over time, with their dates if the file had any."""

    name: str  # what the user asked for: a built-in name or a path
    columns: list[str]  # the value columns, in the order of ``values``
    values: np.ndarray  # (N, C) float64, finite
    dates: list[datetime] | None  # one per row, strictly increasing; None without a date column
    lines: list[int]  # the file line of each row, for messages

    def __len__(self) -> int:
        return len(self.values)

    def select(self, columns: list[str]) -> Series:
        """The same series with only ``columns``, in that order."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise SeriesError(
                f"{self.name}: no value column(s) {missing}; the columns are {self.columns}"
            )
        index = [self.columns.index(c) for c in columns]
        return Series(self.name, list(columns), self.values[:, index], self.dates, self.lines)


# --- reading CSV files (through :mod:`rnnkit.data.tables`) ---


def parse_date(table: Table, row: int, column: str) -> datetime:
    text = table.rows[row][table.index(column)].strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise SeriesError(
        f"{table.where(row, column)}: cannot read {short(text)} as a date "
        f"(ISO 8601 such as 2001-12-31, or one of {list(DATE_FORMATS)})"
    )


def check_order(table: Table, dates: list[datetime]) -> None:
    """Dates must increase strictly: a repeat or a step back names both lines."""
    for i in range(1, len(dates)):
        line, before = table.lines[i], table.lines[i - 1]
        if (dates[i].tzinfo is None) != (dates[i - 1].tzinfo is None):  # cannot be compared
            raise SeriesError(
                f"{table.path}, line {line}: date {dates[i]} and {dates[i - 1]} on line {before}: "
                "one has a time zone and the other not; give every date a zone or none"
            )
        if dates[i] == dates[i - 1]:
            raise SeriesError(f"{table.path}, line {line}: date {dates[i]} repeats line {before}")
        if dates[i] < dates[i - 1]:
            raise SeriesError(
                f"{table.path}, line {line}: dates are not sorted ({dates[i]} comes after "
                f"{dates[i - 1]} on line {before}); sort the file by date"
            )


def pick_date_column(header: list[str], date: str) -> str:
    """``date`` is a column name, "auto" (a column called date, year, ...) or "none"."""
    if date == "none":
        return ""
    if date != "auto":
        return date
    return next((c for c in header if c.lower() in DATE_NAMES), "")


def floats_with_gaps(table: Table, column: str) -> np.ndarray:
    """Column ``column`` as numbers, empty cells as NaN (the built-in CO2 has empty weeks)."""
    at = table.index(column)
    keep = [r for r, row in enumerate(table.rows) if row[at].strip()]
    full = Table(
        table.path, table.header, [table.rows[r] for r in keep], [table.lines[r] for r in keep]
    )
    values = np.full(len(table), np.nan)
    values[keep] = full.floats(column)
    return values


def table_series(table: Table, date: str = "auto", columns=None, gaps: bool = False) -> Series:
    """A table -> a Series of ``columns`` (default: every column but the date column)."""
    date_column = pick_date_column(table.header, date)
    if date_column:
        table.index(date_column)  # a missing date column is named here
    columns = list(columns or [c for c in table.header if c != date_column])
    if not columns:
        raise SeriesError(f"{table.path}: no value columns besides the date column {date_column!r}")
    read = floats_with_gaps if gaps else lambda t, c: np.array(t.floats(c))
    values = np.stack([read(table, c) for c in columns], axis=1)  # (N, C)
    dates = None
    if date_column:
        dates = [parse_date(table, r, date_column) for r in range(len(table))]
        check_order(table, dates)
    if gaps:
        values = fill_gaps(table, values)
    return Series(str(table.path), columns, values, dates, list(table.lines))


def fill_gaps(table: Table, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of empty values between their neighbours, column by column."""
    values = values.copy()
    steps = np.arange(len(values))
    for c in range(values.shape[1]):
        known = np.isfinite(values[:, c])
        if known.sum() < 2:
            raise SeriesError(f"{table.path}: column {c} has under 2 values to interpolate")
        values[:, c] = np.interp(steps, steps[known], values[known, c])
    return values


def read_csv(path: str, date: str = "auto", columns=None) -> Series:
    return table_series(read_table(path), date, columns)


# --- built-in series ---


def package_file(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SeriesError(f"the built-in series needs the package {package}: pip install {package}")
    return str(Path(spec.origin).parent / relative)


def load_builtin(name: str) -> Series:
    if name == "co2":
        table = read_table(package_file("statsmodels", "datasets/co2/co2.csv"))
        series = table_series(table, "date", ["co2"], gaps=True)
    elif name == "sunspots":
        series = read_csv(package_file("statsmodels", "datasets/sunspots/sunspots.csv"), "YEAR")
    else:
        table = read_table(package_file("vega_datasets", "_data/stocks.csv"))
        symbol = name.split(":", 1)[1]
        keep = [r for r, row in enumerate(table.rows) if row[0] == symbol]
        if not keep:
            raise SeriesError(f"{table.path}: no rows for {symbol!r} (AAPL, AMZN, GOOG, IBM, MSFT)")
        table = Table(
            table.path, table.header, [table.rows[r] for r in keep], [table.lines[r] for r in keep]
        )
        series = table_series(table, "date", ["price"])
    series.name = name
    return series


def load_series(data: str, date: str = "auto", columns: list[str] | None = None) -> Series:
    """A built-in series by name (``co2``, ``sunspots``, ``stocks:SYMBOL``) or a CSV file."""
    if data in ("co2", "sunspots") or data.startswith("stocks:"):
        series = load_builtin(data)
        return series.select(columns) if columns else series
    return read_csv(data, date, columns)


# --- split, scaling, windows ---


def chronological_split(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Boundaries (train_end, val_end): rows [0, train_end) train, then validate, then test."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    val_end = n - int(round(n * test_fraction))
    train_end = val_end - int(round(n * val_fraction))
    return train_end, val_end


@dataclass
class Scaler:
    """Per-column standardisation, ``(x - mean) / std``, fitted on the training part only."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Scaler:
        """Mean and std per column, computed on values divided by the column's largest
        magnitude, so that neither 1e300 (whose square overflows) nor 1e-300 (whose square
        underflows) turns the std into inf or 0."""
        size = np.abs(train_values).max(axis=0)
        size = np.where(size > 0, size, 1.0)
        unit = train_values / size
        std = unit.std(axis=0) * size
        return cls(unit.mean(axis=0) * size, np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray, columns: slice | list[int] = slice(None)) -> np.ndarray:
        """Back to the series' units; ``columns`` picks the columns ``values`` holds."""
        return values * self.std[columns] + self.mean[columns]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> Scaler:
        return cls(np.array(values["mean"]), np.array(values["std"]))


def window_origins(start: int, end: int, input_window: int, horizon: int) -> np.ndarray:
    """Forecast origins t with targets [t, t + horizon) inside [start, end) and inputs
    [t - input_window, t) inside the series: the windows whose targets lie in one part."""
    first = max(start, input_window)
    return np.arange(first, end - horizon + 1)


def gather_windows(values, origins, input_window: int, horizon: int):
    """(N, C) values and K origins -> inputs (W, K, C) and targets (H, K, C), time first."""
    steps = np.arange(-input_window, horizon)  # (W + H,)
    windows = values[origins[None, :] + steps[:, None]]  # (W + H, K, C)
    return windows[:input_window], windows[input_window:]


def add_months(date: datetime, months: int) -> datetime:
    month = date.month - 1 + months
    return date.replace(year=date.year + month // 12, month=month % 12 + 1)


def future_dates(dates: list[datetime], steps: int) -> list[str]:
    """The ``steps`` dates after the last one, as text: whole months (or years) when the
    last gaps are whole months on the same day, else the median gap in time."""
    recent = dates[-13:]
    gaps = [(b.year - a.year) * 12 + b.month - a.month for a, b in pairwise(recent)]
    monthly = len(set(gaps)) == 1 and gaps[0] > 0 and len({d.day for d in recent}) == 1
    if monthly:
        ahead = [add_months(dates[-1], gaps[0] * k) for k in range(1, steps + 1)]
    else:
        step = sorted(b - a for a, b in pairwise(recent))[len(recent) // 2 - 1]
        ahead = [dates[-1] + step * k for k in range(1, steps + 1)]
    yearly = monthly and gaps[0] % 12 == 0 and all(d.month == 1 and d.day == 1 for d in recent)
    timed = any(d.hour or d.minute or d.second for d in dates[-13:])
    fmt = "%Y" if yearly else "%Y-%m-%d %H:%M:%S" if timed else "%Y-%m-%d"
    return [d.strftime(fmt) for d in ahead]


def write_forecast(path, series: Series, predicted: np.ndarray, labels) -> list:
    """One row per forecast step: its date (or step number after the last row) and values."""
    names = series.columns[: predicted.shape[1]]
    first = "date" if labels else "step"
    labels = labels or [str(len(series) + h) for h in range(1, len(predicted) + 1)]
    rows = [
        [label, *(f"{v:.6g}" for v in values)]
        for label, values in zip(labels, predicted, strict=True)
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([first, *names])
        writer.writerows(rows)
    return rows
