"""The rnnkit command and the config machinery behind its flags; every bad input's message."""

import dataclasses
import json
from types import SimpleNamespace
from typing import Literal

import pytest

from rnnkit.cli import main
from rnnkit.tasks import charlm, load_task
from rnnkit.training import config as configuration


@dataclasses.dataclass
class Example:
    size: int = 3  # how many
    rate: float = 0.5  # how fast
    kind: Literal["a", "b"] = "a"  # which one
    name: str | None = None  # optional label
    flag: bool = False  # a switch


def test_config_rejects_unknown_keys_and_wrong_types():
    assert configuration.from_dict(Example, {"size": 4, "rate": 1}).rate == 1.0
    with pytest.raises(configuration.ConfigError, match=r"unknown setting\(s\) \['sise'\]"):
        configuration.from_dict(Example, {"sise": 4})
    with pytest.raises(configuration.ConfigError, match="size: expected int, got str"):
        configuration.from_dict(Example, {"size": "4"})
    with pytest.raises(configuration.ConfigError, match="size: expected int, got bool"):
        configuration.from_dict(Example, {"size": True})
    with pytest.raises(configuration.ConfigError, match=r"kind: expected one of \['a', 'b'\]"):
        configuration.from_dict(Example, {"kind": "c"})


def test_flags_and_help_come_from_the_dataclass(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    configuration.add_arguments(parser, Example)
    args = parser.parse_args(["--size", "7", "--flag", "--kind", "b"])
    assert configuration.given(args, Example) == {"size": 7, "flag": True, "kind": "b"}
    assert configuration.field_help(Example)["rate"] == "how fast"
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "seven"])
    assert "invalid int value" in capsys.readouterr().err


def test_config_saved_and_rebuilt(tmp_path):
    config = charlm.Config(hidden=64, cell="gru")
    configuration.save(config, tmp_path / "config.json", task="charlm")
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "charlm"
    assert configuration.load(charlm.Config, tmp_path / "config.json") == config


def tiny_flags(run, data="hello"):
    return [
        "train",
        "charlm",
        "--data",
        str(data),
        "--hidden",
        "16",
        "--batch-size",
        "4",
        "--window",
        "8",
        "--steps",
        "6",
        "--minutes",
        "0",
        "--eval-every",
        "3",
        "--val-chars",
        "200",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(run),
    ]


def test_train_sample_eval_and_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_flags(run)) == 0
    assert {
        "config.json",
        "vocab.json",
        "model.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "loss.png",
    } <= {p.name for p in run.iterdir()}
    assert "best val_loss" in capsys.readouterr().out
    assert main(["sample", str(run), "--prime", "he", "--length", "20", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(run), "--prime", "he", "--length", "20", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.startswith("he") and len(first) == 23
    assert main(["eval", str(run), "--data", "hello"]) == 0
    assert "nats/char" in capsys.readouterr().out
    assert main(["train", "charlm", "--resume", str(run), "--steps", "9"]) == 0
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6, 9]


def error_of(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_each_give_their_message(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xc3\x28def" * 100)
    assert "bad.txt: not valid UTF-8 at byte offset 3" in error_of(
        tiny_flags(tmp_path / "r1", bad), capsys
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in error_of(tiny_flags(tmp_path / "r2", empty), capsys)
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    assert "short.txt" in error_of(tiny_flags(tmp_path / "r3", short), capsys)
    assert "no such file" in error_of(tiny_flags(tmp_path / "r4", tmp_path / "missing.txt"), capsys)
    assert "not a run directory" in error_of(["sample", str(tmp_path)], capsys)


def test_resume_refuses_to_change_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_flags(run)) == 0
    message = error_of(["train", "charlm", "--resume", str(run), "--hidden", "32"], capsys)
    assert "only" in message and "'hidden'" in message


def test_unknown_flag_and_bad_choice_are_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["train", "charlm", "--hiden", "3"])
    assert "unrecognized arguments: --hiden" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "charlm", "--cell", "transformer"])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err


def test_the_limits_a_user_gives_replace_the_tasks_default_limits(monkeypatch):
    """classify stops after three epochs by default; --minutes 5 alone trains five minutes,
    and a task's default --minutes gives way to --steps the same way."""
    configs = []

    class Stopped:
        world, best, interrupted = SimpleNamespace(rank=0), 0.0, False

    for task in ("classify", "charlm"):
        module = load_task(task)
        monkeypatch.setattr(
            module, "train", lambda config, resume: configs.append(config) or Stopped
        )
    assert main(["train", "classify", "--minutes", "5"]) == 0
    assert main(["train", "classify"]) == 0
    assert main(["train", "charlm", "--steps", "7"]) == 0
    given, default, steps = configs
    assert (given.minutes, given.epochs, given.steps) == (5, 0, 0)
    assert (default.minutes, default.epochs) == (0, 3)
    assert (steps.minutes, steps.epochs, steps.steps) == (0, 0, 7)
