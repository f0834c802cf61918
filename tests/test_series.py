"""Series reading, built-in series, chronological split, scaler, windows, future dates."""

from datetime import datetime

import numpy as np
import pytest

from rnnkit.data.series import (
    Scaler,
    SeriesError,
    chronological_split,
    future_dates,
    gather_windows,
    load_series,
    read_csv,
    window_origins,
)
from rnnkit.data.tables import TableError


def write(tmp_path, text: str, name: str = "s.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_dates_and_value_columns(tmp_path):
    path = write(tmp_path, "date,sales,temp\n2020-01-01,1,10\n2020-02-01,2.5,11\n")
    series = read_csv(path)
    assert series.columns == ["sales", "temp"]
    assert series.values.shape == (2, 2)
    assert series.values[1, 0] == 2.5
    assert series.dates == [datetime(2020, 1, 1), datetime(2020, 2, 1)]
    assert series.lines == [2, 3]


def test_without_a_date_column_the_rows_are_the_clock(tmp_path):
    series = read_csv(write(tmp_path, "y\n1\n2\n3\n"))
    assert series.dates is None
    assert series.values[:, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "text, columns, message",
    [
        ("date,y\n2020-01-01,1\n", ["z"], r"s\.csv: no column 'z'"),
        (
            "date,y\n2020-01-01,1\n2020-01-02,abc\n",
            None,
            r"s\.csv, line 3, column 'y'.*'abc'.*not a number",
        ),
        (
            "date,y\n2020-01-01,1\n2020-01-02,nan\n",
            None,
            r"s\.csv, line 3, column 'y'.*not a finite",
        ),
        ("date,y\n2020-01-01,\n2020-01-02,1\n", None, r"s\.csv, line 2, column 'y'"),
        ("date,y\n2020-01-02,1\n2020-01-01,2\n", None, r"s\.csv, line 3: dates are not sorted"),
        ("date,y\n2020-01-01,1\n2020-01-01,2\n", None, r"s\.csv, line 3: date .* repeats line 2"),
        ("date,y\nyesterday,1\n", None, r"s\.csv, line 2, column 'date': cannot read 'yesterday'"),
    ],
)
def test_bad_input_names_the_file_line_and_problem(tmp_path, text, columns, message):
    with pytest.raises(TableError, match=message):
        read_csv(write(tmp_path, text), columns=columns)


def test_a_missing_target_or_covariate_column_is_named(tmp_path):
    series = read_csv(write(tmp_path, "date,y\n2020-01-01,1\n"))
    with pytest.raises(SeriesError, match=r"s\.csv: no value column\(s\) \['x'\]"):
        series.select(["y", "x"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TableError, match="nope.csv"):
        load_series(str(tmp_path / "nope.csv"))


def test_builtin_series_are_read_offline():
    co2 = load_series("co2")
    assert co2.columns == ["co2"] and len(co2) == 2284
    assert np.isfinite(co2.values).all()  # the empty weeks are interpolated
    assert load_series("sunspots").dates[0] == datetime(1700, 1, 1)
    aapl = load_series("stocks:AAPL")
    assert len(aapl) == 123 and aapl.dates[1] == datetime(2000, 2, 1)
    with pytest.raises(SeriesError, match="no rows for 'XYZ'"):
        load_series("stocks:XYZ")


def test_split_is_chronological_and_covers_every_row():
    train_end, val_end = chronological_split(100, 0.15, 0.2)
    assert (train_end, val_end) == (65, 80)
    with pytest.raises(ValueError, match="sum below 1"):
        chronological_split(100, 0.5, 0.5)


def test_windows_keep_their_targets_inside_their_part():
    origins = window_origins(10, 20, input_window=4, horizon=3)
    assert origins.tolist() == list(range(10, 18))  # the last targets are rows 17, 18, 19
    assert window_origins(0, 10, 4, 3).tolist() == [4, 5, 6, 7]
    values = np.arange(20.0)[:, None]  # (N, 1)
    inputs, targets = gather_windows(values, np.array([4, 10]), 4, 3)
    assert inputs.shape == (4, 2, 1) and targets.shape == (3, 2, 1)
    assert inputs[:, 1, 0].tolist() == [6, 7, 8, 9]
    assert targets[:, 1, 0].tolist() == [10, 11, 12]


def test_scaler_round_trip_and_constant_columns():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    scaler = Scaler.fit(train)
    assert scaler.mean.tolist() == [2.0, 5.0] and scaler.std.tolist() == [1.0, 1.0]
    values = np.array([[10.0, 7.0]])
    assert np.allclose(scaler.inverse(scaler.transform(values)), values)
    assert np.allclose(Scaler.from_dict(scaler.to_dict()).mean, scaler.mean)


def test_future_dates_follow_months_years_and_weeks():
    monthly = [datetime(2020, m, 1) for m in range(1, 13)]
    assert future_dates(monthly, 2) == ["2021-01-01", "2021-02-01"]
    yearly = [datetime(y, 1, 1) for y in range(2000, 2005)]
    assert future_dates(yearly, 2) == ["2005", "2006"]
    weekly = [datetime(2020, 1, 4), datetime(2020, 1, 11), datetime(2020, 1, 18)]
    assert future_dates(weekly, 1) == ["2020-01-25"]
