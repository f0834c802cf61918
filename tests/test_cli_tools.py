"""The commands that look inside models: summary, inspect, gradflow and bench memory."""

import json

import pytest

from rnnkit import cli
from rnnkit.tools import memory


def test_summary_prints_the_cost_table_and_training_memory(charlm_run, capsys):
    assert cli.main(["summary", str(charlm_run)]) == 0
    text = capsys.readouterr().out
    # LSTM of 8 units on an 8-wide embedding: 4 * 8 * (8 + 8) MACs per step.
    assert "rnn[0]" in text and "512" in text and "per sequence of 8 steps" in text
    assert "per token" in text and "AdamW" in text


def test_inspect_writes_the_page(charlm_run, tmp_path, capsys):
    text, out = tmp_path / "t.txt", tmp_path / "page.html"
    text.write_text("hello hello\n")
    assert cli.main(["inspect", str(charlm_run), "--text", str(text), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and str(out) in capsys.readouterr().out


def test_inspect_bad_text_is_an_error_not_a_traceback(charlm_run, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    assert cli.main(["inspect", str(charlm_run), "--text", str(bad)]) == 2
    assert "bad.txt: not valid UTF-8 at byte offset 0, line 1" in capsys.readouterr().err


def test_gradflow_and_bench_memory_keep_their_own_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["gradflow", "--help"])
    assert exit_.value.code == 0 and "--scale" in capsys.readouterr().out
    js = tmp_path / "m.json"
    copy_accuracy = memory.train_and_score("copy", "gru", 2, steps=2, hidden=4)  # seeded
    code = cli.main(
        [
            "bench",
            "memory",
            "--cells",
            "gru",
            "--tasks",
            "copy",
            "--distances",
            "2",
            "--steps",
            "2",
            "--hidden",
            "4",
            "--out",
            str(tmp_path / "m.png"),
            "--json",
            str(js),
        ]
    )
    assert code == 0 and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(js.read_text())
    # the flags reached `bench memory`: one cell, one task, one distance, 2 steps of 4 units
    assert saved["steps"] == 2 and list(saved["results"]) == ["copy"]
    assert saved["results"]["copy"] == {"gru": {"2": pytest.approx(copy_accuracy)}}
    assert 0 <= copy_accuracy <= 1


def test_summary_of_a_directory_that_is_no_run(tmp_path, capsys):
    assert cli.main(["summary", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
