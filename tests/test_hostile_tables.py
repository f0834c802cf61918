"""Hostile CSV and TSV: tables, time series, captions.csv and labelled texts.

A loader either returns what the file holds or raises a :class:`DataError` naming the file
and, for a problem in one row, its line (the header is line 1) and column. Any other
exception fails the test.
"""

import bz2
import gzip
import lzma
import zipfile
from datetime import date, timedelta

import numpy as np
import pytest
from hostile import first_bad_line, outcome  # tests/hostile.py
from hypothesis import given
from hypothesis import strategies as st

from rnnkit.data import DataError
from rnnkit.data.images import read_captions
from rnnkit.data.series import Scaler, SeriesError, read_csv
from rnnkit.data.tables import TableError, read_table
from rnnkit.tasks import classify

COMPRESS = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


def zipped(raw: bytes, path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("table.csv", raw)


# --- any bytes, under any of the names a table may have ---


@given(
    raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
    name=st.sampled_from(["t.csv", "t.tsv", "t.txt", "t.csv.gz", "t.tsv.bz2", "t.csv.xz", "t.zip"]),
    compress=st.booleans(),
    cut=st.integers(0, 40),
)
def test_a_table_of_any_bytes_loads_or_names_the_file(tmp_path, raw, name, compress, cut):
    """Raw bytes under a compressed name, or real archives truncated by ``cut`` bytes."""
    path = tmp_path / name
    suffix = path.suffix if path.suffix in (*COMPRESS, ".zip") else ""
    if compress and suffix == ".zip":
        zipped(raw, path)
    else:
        path.write_bytes(COMPRESS[suffix](raw) if compress else raw)
    if cut:
        whole = path.read_bytes()
        path.write_bytes(whole[: max(len(whole) - cut, 0)])
    table, message = outcome(read_table, path)
    bad = first_bad_line(raw) if compress or suffix == "" else 0
    if table is None:
        assert str(path) in message
        assert cut or not bad or f"line {bad}" in message
        return
    assert not bad and table.rows and all(len(row) == len(table.header) for row in table.rows)
    assert table.lines == sorted(table.lines) and table.lines[0] >= 2


# --- the cells of a table: missing columns, NaN, text in a number column ---

NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
CELL = st.one_of(
    NUMBER,
    NUMBER,
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e999", "abc", "1,5", "--1", "0x10"]),
)
ROW = st.lists(CELL, min_size=1, max_size=3)  # a row of the wrong width is likely


@given(rows=st.lists(ROW, max_size=6), asked=st.sampled_from(["x", "y", "z"]))
def test_numbers_are_read_or_the_first_bad_cell_is_named(tmp_path, rows, asked):
    path = tmp_path / "t.csv"
    text = "x,y\n" + "".join(",".join(f'"{c}"' if "," in c else c for c in r) + "\n" for r in rows)
    path.write_text(text)
    table, message = outcome(read_table, path)
    kept = [(line, r) for line, r in enumerate(rows, 2) if r != [""]]  # blank lines skipped
    wrong = [line for line, r in kept if len(r) != 2]
    if table is None:
        expected = f"line {wrong[0]}: {len(rows[wrong[0] - 2])} fields" if wrong else "no rows"
        assert str(path) in message and expected in message
        return
    assert not wrong and table.lines == [line for line, _ in kept]
    values, message = outcome(table.floats, asked)
    if asked == "z":
        assert values is None and "no column 'z'" in message and str(path) in message
        return
    column = 0 if asked == "x" else 1
    bad = [line for line, r in kept if not finite(r[column])]
    if bad:
        assert values is None and f"{path}, line {bad[0]}, column {asked!r}" in message
    else:
        assert values == [float(r[column]) for _, r in kept]


def finite(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value - value == 0


# --- time series: unsorted, repeated or unreadable dates ---

DAY = st.integers(0, 6).map(lambda k: date(2001, 1, 1) + timedelta(days=k))
DATE = st.one_of(
    DAY.map(date.isoformat),
    DAY.map(lambda d: d.strftime("%Y/%m/%d")),
    st.sampled_from(["", "yesterday", "2001-02-30", "2001-13-01", "31/12/2001"]),
)
BAD_DATES = {"", "yesterday", "2001-02-30", "2001-13-01", "31/12/2001"}


@given(dates=st.lists(DATE, min_size=1, max_size=7))
def test_a_series_has_increasing_dates_or_names_the_first_bad_line(tmp_path, dates):
    path = tmp_path / "s.csv"
    path.write_text("date,value\n" + "".join(f"{d},{i}.5\n" for i, d in enumerate(dates)))
    series, message = outcome(read_csv, str(path))
    unreadable = [line for line, d in enumerate(dates, 2) if d in BAD_DATES]
    if unreadable:
        assert f"{path}, line {unreadable[0]}, column 'date': cannot read" in message
        return
    days = [date.fromisoformat(d.replace("/", "-")) for d in dates]
    disorder = [i for i in range(1, len(days)) if days[i] <= days[i - 1]]
    if disorder:
        i = disorder[0]
        problem = "repeats" if days[i] == days[i - 1] else "not sorted"
        assert f"{path}, line {i + 2}: " in message and problem in message
        return
    assert series is not None and series.values[:, 0].tolist() == [
        i + 0.5 for i in range(len(days))
    ]


def test_dates_with_and_without_a_time_zone_are_an_error_not_a_type_error(tmp_path):
    path = tmp_path / "tz.csv"
    path.write_text("date,value\n2001-01-01,1\n2001-01-02T00:00+01:00,2\n")
    with pytest.raises(SeriesError, match=r"tz\.csv, line 3: .*one has a time zone"):
        read_csv(str(path))


@pytest.mark.parametrize(
    "body, problem",
    [
        ("date,value\n2001-01-01,1\n2001-01-02,\n", r"line 3, column 'value': '' is not a number"),
        ("date,value\n2001-01-01,NaN\n", r"line 2, column 'value': 'NaN' is not a finite number"),
        ("date,value\n2001-01-01,1\n2001-01-02,one\n", r"line 3, column 'value': 'one' is not a"),
        ("when,value\n2001-01-01,1\n", r"line 2, column 'when': '2001-01-01' is not a number"),
        ("value\n1\n2,3\n", r"line 3: 2 fields where the header has 1"),
    ],
)
def test_series_problems_name_file_line_and_column(tmp_path, body, problem):
    path = tmp_path / "s.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=r"s\.csv, " + problem):
        read_csv(str(path))


# --- captions.csv and labelled texts ---


@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_captions_csv_of_any_bytes_loads_or_names_it(tmp_path, raw):
    (tmp_path / "captions.csv").write_bytes(raw)
    result, message = outcome(read_captions, tmp_path)
    if result is None:
        assert str(tmp_path / "captions.csv") in message
        return
    names, references = result
    assert len(names) == len(references) and all(n.strip() for n in names)
    assert all(text.strip() for refs in references for text in refs)


@given(rows=st.lists(st.tuples(st.sampled_from(["a.png", "", " "]), st.sampled_from(["x", ""]))))
def test_an_empty_image_or_caption_names_its_line(tmp_path, rows):
    body = "".join(f"{image},{text}\n" for image, text in rows)
    (tmp_path / "captions.csv").write_text("image,caption\n" + body)
    result, message = outcome(read_captions, tmp_path)
    empty = [
        (line, "image" if not image.strip() else "caption")
        for line, (image, text) in enumerate(rows, 2)
        if not image.strip() or not text.strip()
    ]
    if not rows:
        assert "a header but no rows" in message
    elif empty:
        line, column = empty[0]
        assert f"line {line}, column {column!r}: empty" in message
    else:
        assert result == (["a.png"], [["x"] * len(rows)])


def test_labelled_texts_with_missing_columns_or_labels_are_named(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars\ngood,5\n")
    with pytest.raises(TableError, match=r"reviews\.csv: no column 'text'"):
        classify.read_labelled(classify.Config(), str(path))
    path.write_text("text,label\ngood,pos\nbad,\n")
    with pytest.raises(TableError, match=r"reviews\.csv, line 3, column 'label': empty label"):
        classify.read_labelled(classify.Config(), str(path))


@given(exponent=st.integers(-300, 300), columns=st.integers(1, 3))
def test_the_scaler_of_huge_or_tiny_values_is_finite_and_standardises(exponent, columns):
    """1e300 squared overflows and 1e-300 squared underflows; the std must not."""
    values = np.sin(np.arange(40.0 * columns)).reshape(40, columns) * 10.0**exponent
    scaler = Scaler.fit(values)
    assert np.isfinite(scaler.std).all() and (scaler.std > 0).all()
    scaled = scaler.transform(values)
    assert np.allclose(scaled.std(axis=0), 1.0) and np.allclose(scaled.mean(axis=0), 0.0)


def test_one_enormous_field_loads_and_a_bad_byte_after_it_is_placed(tmp_path):
    path = tmp_path / "long.csv"
    path.write_bytes(b"text,label\n" + b"word " * 400_000 + b",pos\n")
    assert len(read_table(path).column("text")[0]) == 2_000_000
    path.write_bytes(b"text,label\n" + b"word " * 400_000 + b",pos\nnext,\xff\n")
    placed = r"long\.csv: not valid UTF-8 at byte offset 2000021, line 3"
    with pytest.raises(TableError, match=placed):
        read_table(path)
