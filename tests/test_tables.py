"""CSV/TSV tables: compressed files read as they are; every bad input names file, line, column."""

import bz2
import gzip

import pytest

from rnnkit.data.tables import TableError, read_table

ROWS = 'text,label,score\nGreat movie!,pos,1.5\n"long, quoted\nreview",neg,-2\nfine,pos,0\n'


def write(path, text, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("name, opener", [("t.csv", open), ("t.csv.gz", gzip.open),
                                          ("t.csv.bz2", bz2.open)])  # fmt: skip
def test_plain_and_compressed_files_read_the_same(tmp_path, name, opener):
    table = read_table(write(tmp_path / name, ROWS, opener))
    assert table.header == ["text", "label", "score"]
    assert table.column("text") == ["Great movie!", "long, quoted\nreview", "fine"]
    assert table.floats("score") == [1.5, -2.0, 0.0]
    assert table.lines == [2, 3, 5]  # the line each record starts on, header = line 1


def test_tsv_by_suffix_and_sniffed_delimiter(tmp_path):
    tsv = read_table(write(tmp_path / "t.tsv", "a\tb\n1,5\t2\n"))
    assert tsv.column("a") == ["1,5"]
    sniffed = read_table(write(tmp_path / "t.data", "a;b\n1;2\n3;4\n"))
    assert sniffed.column("b") == ["2", "4"]


def test_missing_column_names_file_and_header(tmp_path):
    table = read_table(write(tmp_path / "t.csv", ROWS))
    with pytest.raises(TableError, match=r"t\.csv: no column 'review'.*'text', 'label', 'score'"):
        table.column("review")


def test_non_numeric_value_names_file_line_and_column(tmp_path):
    table = read_table(write(tmp_path / "t.csv", "x,y\n1,2\n3,abc\n"))
    with pytest.raises(TableError, match=r"t\.csv, line 3, column 'y': 'abc' is not a number"):
        table.floats("y")


@pytest.mark.parametrize("bad", ["nan", "inf", ""])
def test_nan_infinite_or_empty_number_is_an_error(tmp_path, bad):
    table = read_table(write(tmp_path / "t.csv", f"x,name\n1,a\n{bad},b\n2,c\n"))
    with pytest.raises(TableError, match=r"t\.csv, line 3, column 'x'"):
        table.floats("x")


def test_row_of_the_wrong_width_names_its_line(tmp_path):
    with pytest.raises(TableError, match=r"t\.csv, line 3: 3 fields where the header has 2"):
        read_table(write(tmp_path / "t.csv", "a,b\n1,2\n1,2,3\n"))


def test_empty_missing_and_header_only_files(tmp_path):
    with pytest.raises(TableError, match="empty file"):
        read_table(write(tmp_path / "e.csv", ""))
    with pytest.raises(TableError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(TableError, match="a header but no rows"):
        read_table(write(tmp_path / "h.csv", "a,b\n"))


def test_damaged_compressed_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(TableError, match=r"t\.csv\.gz: cannot be read"):
        read_table(path)


REVIEW = "a long review " * 40  # 560 characters: longer than any column name


def test_a_first_line_that_is_a_record_is_told_from_a_header(tmp_path):
    headless = write(tmp_path / "h.csv", f"\ufeff1,{REVIEW}\n-1,bad\n1,good\n")
    table = read_table(headless, header=None)
    assert table.header == ["1", "2"] and table.column("1") == ["1", "-1", "1"]
    assert table.lines == [1, 2, 3] and table.column("2")[0] == REVIEW  # the mark is dropped
    labels = read_table(write(tmp_path / "l.csv", "pos,fine\nneg,poor\npos,ok\n"), header=None)
    assert labels.column("1") == ["pos", "neg", "pos"]  # 'pos' recurs below: a record
    headed = read_table(write(tmp_path / "t.csv", ROWS), header=None)
    assert headed.header == ["text", "label", "score"] and len(headed) == 3
    assert read_table(headless, header=True).header == ["1", REVIEW.strip()]  # as asked


def test_columns_by_position_and_a_missing_column_cut_short(tmp_path):
    table = read_table(write(tmp_path / "h.csv", f"1,{REVIEW}\n-1,bad\n"))  # taken as a header
    assert table.column("1") == ["-1"] and table.column("2") == ["bad"]
    with pytest.raises(TableError, match=r"no column 'text'; the first line has 2 fields") as err:
        table.column("text")
    assert len(str(err.value)) < 400 and "--header no" in str(err.value)


def test_json_lines_are_a_table_keyed_by_the_first_object(tmp_path):
    path = write(
        tmp_path / "r.jsonl.gz",
        '{"text": "good", "label": 1}\n\n{"label": -1, "text": "bad"}\n',
        gzip.open,
    )
    table = read_table(path)
    assert table.header == ["text", "label"] and table.column("label") == ["1", "-1"]
    assert table.lines == [1, 3]
    with pytest.raises(TableError, match=r"r\.jsonl, line 2: expected a JSON object"):
        read_table(write(tmp_path / "r.jsonl", '{"text": "a"}\n["text"]\n'))
    with pytest.raises(TableError, match=r"s\.ndjson, line 1: not valid JSON"):
        read_table(write(tmp_path / "s.ndjson", "{text: a}\n"))
