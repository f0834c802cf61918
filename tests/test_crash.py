"""Crash safety: SIGKILL at any moment then --resume, a full disk, a read-only run directory."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnkit.data import files
from rnnkit.tasks import charlm
from rnnkit.training import checkpoint
from rnnkit.training.checkpoint import CheckpointError, load_tensors
from rnnkit.training.trainer import Progress, Trainer

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 40
FLAGS = dict(hidden=32, batch_size=8, window=16, steps=60, eval_every=20, checkpoint_every=7)
FLAGS.update(dropout=0.1, warmup=2, minutes=0.0, precision="fp32", device="cpu")


def command_line(corpus, out) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FLAGS.items()]
    return ["train", "charlm", f"--data={corpus}", f"--out={out}", *flags]


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def saved_step(run_dir) -> int:
    """The step of ``last.safetensors``, read from its header alone (it may be replaced now)."""
    try:
        raw = (run_dir / "last.safetensors").read_bytes()
    except FileNotFoundError:
        return -1
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return json.loads(header["__metadata__"]["trainer"])["step"]


def run_until(args: list[str], killed_when, log) -> int:
    """Run ``rnnkit ARGS`` in a new process; SIGKILL it as soon as ``killed_when()`` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnkit.cli", *args], env=env, stdout=log, stderr=log
    )
    while process.poll() is None:
        if killed_when():
            process.send_signal(signal.SIGKILL)
        time.sleep(0.002)
    return process.returncode


def test_sigkill_then_resume_gives_the_run_never_interrupted(tmp_path, one_thread):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    config = charlm.Config(data=str(corpus), out=str(straight), **FLAGS)
    charlm.train(config, progress=Progress(io.StringIO()))

    log = open(tmp_path / "log.txt", "w")
    metrics = killed / "metrics.jsonl"
    first_line = lambda: metrics.exists() and metrics.read_text().count("\n") >= 1  # noqa: E731
    assert run_until(command_line(corpus, killed), first_line, log) == -signal.SIGKILL
    assert saved_step(killed) in (14, 20)  # killed around the first evaluation
    again = ["train", "charlm", f"--resume={killed}"]
    past_28 = lambda: saved_step(killed) >= 28  # noqa: E731  (a --checkpoint-every save)
    assert run_until(again, past_28, log) == -signal.SIGKILL
    assert 28 <= saved_step(killed) < 60  # killed after a --checkpoint-every save
    assert run_until(again, lambda: False, log) == 0, (tmp_path / "log.txt").read_text()

    expected, got = rows(straight), rows(killed)
    assert [r["step"] for r in got] == [20, 40, 60]  # none lost, none twice
    for a, b in zip(expected, got, strict=True):
        assert {**a, "elapsed": 0} == {**b, "elapsed": 0}  # losses exactly equal
    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_tensors(straight / name)[0], load_tensors(killed / name)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(killed.glob(".*tmp*"))  # no half-written file left behind


# --- a full disk, a read-only directory ---


def tiny_trainer(tmp_path, **changes) -> Trainer:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    settings = dict(data=str(corpus), hidden=8, batch_size=4, window=8, steps=8, eval_every=4)
    settings.update(warmup=2, minutes=0.0, precision="fp32", device="cpu")
    config = charlm.Config(**{**settings, "out": str(tmp_path / "run"), **changes})
    vocab, streams, val_ids = charlm.prepare(config)
    task = charlm.build_task(config, vocab, streams, val_ids)
    return Trainer(config, task, config.out, Progress(io.StringIO()))


def failing_open(code: int, failing: list):
    """``open`` whose files take half of each write, then fail with ``code`` while
    ``failing`` is true: a disk that fills up mid-write, a file system turned read-only."""
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        if failing and any(c in mode for c in "wa"):
            if code == errno.EROFS:
                raise OSError(code, os.strerror(code), str(file))
            handle = real_open(file, mode, *args, **kwargs)
            real_write = handle.write

            def write(data):
                real_write(data[: len(data) // 2])
                raise OSError(code, os.strerror(code))

            handle.write = write
            return handle
        return real_open(file, mode, *args, **kwargs)

    return fake_open


def test_a_full_disk_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    trainer = tiny_trainer(tmp_path, steps=12)
    run = tmp_path / "run"
    full: list = []
    for module in (checkpoint, files):  # metrics lines, and every file written atomically
        monkeypatch.setattr(module, "open", failing_open(errno.ENOSPC, full), raising=False)
    real_loss = trainer.model.loss

    def loss_then_fill(batch, carry):
        if trainer.step == 9:
            full.append(True)
        return real_loss(batch, carry)

    trainer.model.loss = loss_then_fill
    with pytest.raises(CheckpointError, match=r"metrics.jsonl: could not write \(the disk is full"):
        trainer.fit()
    assert [r["step"] for r in rows(run)] == [4, 8]  # the half-written line is gone
    with pytest.raises(CheckpointError, match="disk is full.*previous last.safetensors is intact"):
        trainer.save_last()
    assert load_tensors(run / "last.safetensors")[1]["trainer"]["step"] == 8
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []

    full.clear()  # space again: the run resumes from its checkpoint
    again = tiny_trainer(tmp_path, steps=12)
    again.restore()
    assert again.step == 8 and again.fit() == "done"
    assert [r["step"] for r in rows(run)] == [4, 8, 12]


def test_a_read_only_file_system_is_reported_before_training(tmp_path, monkeypatch):
    tiny_trainer(tmp_path).fit()
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    for module in (checkpoint, files):
        monkeypatch.setattr(module, "open", failing_open(errno.EROFS, [True]), raising=False)
    with pytest.raises(CheckpointError, match=r"not writable \(Read-only file system\)"):
        tiny_trainer(tmp_path, steps=12)
    monkeypatch.undo()
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


def test_a_read_only_run_directory_is_reported_and_its_checkpoint_kept(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit()
    run = tmp_path / "run"
    before = (run / "last.safetensors").read_bytes()
    run.chmod(0o555)
    try:
        probe = run / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("this user writes into read-only directories (root): see the EROFS test")
        with pytest.raises(CheckpointError, match="not writable.*Permission denied"):
            tiny_trainer(tmp_path, steps=12)
        with pytest.raises(CheckpointError, match="read-only; the previous last.safetensors"):
            trainer.save_last()
    finally:
        run.chmod(0o755)
    assert (run / "last.safetensors").read_bytes() == before
