"""The shared trainer: schedule, checkpoints, resume, Ctrl-C, non-finite losses."""

import io
import json
import math
import pickle
import signal

import pytest
import torch

from rnnkit import cli
from rnnkit.kernels import hardware
from rnnkit.tasks import charlm
from rnnkit.training import checkpoint, heap
from rnnkit.training import trainer as training
from rnnkit.training.trainer import NonFiniteLoss, Progress, TrainConfig, Trainer, lr_factor

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 12


def tiny_config(tmp_path, **changes) -> charlm.Config:
    corpus = tmp_path / "corpus.txt"
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus.write_text(TEXT)
    settings = dict(
        data=str(corpus),
        hidden=16,
        batch_size=4,
        window=8,
        steps=12,
        minutes=0.0,
        eval_every=4,
        warmup=2,
        dropout=0.1,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / "run"),
    )
    return charlm.Config(**{**settings, **changes})


def tiny_trainer(config: charlm.Config, losses: list, interrupt_at: int = 0) -> Trainer:
    """A trainer whose loss function records each loss, and sends SIGINT at a chosen step."""
    vocab, streams, val_ids = charlm.prepare(config)
    task = charlm.build_task(config, vocab, streams, val_ids)
    real_loss = task.model.loss

    def recording_loss(batch, carry):
        loss = real_loss(batch, carry)
        losses.append((loss.total / loss.weight).item())
        if len(losses) == interrupt_at:
            signal.raise_signal(signal.SIGINT)
        return loss

    task.model.loss = recording_loss
    return Trainer(config, task, config.out, Progress(io.StringIO()))


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_warmup_then_cosine_to_min_lr():
    config = TrainConfig(warmup=10, min_lr=0.1, steps=100)
    assert lr_factor(config, 0, 0.0, 1.0) == pytest.approx(0.1)
    assert lr_factor(config, 9, 0.09, 1.0) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(0.09 * math.pi))
    )
    assert lr_factor(config, 99, 1.0, 1.0) == pytest.approx(0.1)
    plateau = TrainConfig(schedule="plateau", warmup=0)
    assert lr_factor(plateau, 50, 0.5, 0.25) == 0.25


def test_a_stopping_limit_is_required(tmp_path):
    with pytest.raises(ValueError, match="--steps, --epochs or --minutes"):
        tiny_trainer(tiny_config(tmp_path, steps=0), [])
    with pytest.raises(ValueError, match="--checkpoint-every must be 0 or more, got -3"):
        tiny_trainer(tiny_config(tmp_path, checkpoint_every=-3), [])


def test_resume_after_ctrl_c_continues_identically(tmp_path):
    straight: list = []
    tiny_trainer(tiny_config(tmp_path / "a"), straight).fit()
    first: list = []
    stopped = tiny_trainer(tiny_config(tmp_path / "b"), first, interrupt_at=6)
    assert stopped.fit() == "interrupted" and stopped.step == 6
    rest: list = []
    resumed = tiny_trainer(tiny_config(tmp_path / "b"), rest)
    resumed.restore()
    assert resumed.fit() == "done"
    assert len(straight) == 12 and first + rest == straight  # bit for bit
    rows = read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    expected = read_metrics(tmp_path / "a" / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in expected]


def test_resume_drops_metric_lines_written_after_the_checkpoint(tmp_path):
    config = tiny_config(tmp_path, steps=8)
    tiny_trainer(config, []).fit()
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + json.dumps({"step": 99}) + "\n")
    again = tiny_trainer(config, [])
    again.restore()
    assert again.step == 8
    assert [row["step"] for row in read_metrics(metrics)] == [4, 8]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "rmsprop"])
def test_optimizer_state_round_trips_through_safetensors(tmp_path, optimizer):
    config = tiny_config(tmp_path, optimizer=optimizer, steps=4)
    trainer = tiny_trainer(config, [])
    trainer.fit()
    again = tiny_trainer(config, [])
    again.restore()
    before, after = trainer.optimizer.state_dict(), again.optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for index, slots in before["state"].items():
        for key, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][index][key]))


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    training.save_tensors(path, {"w": torch.ones(3)}, {"step": 1})

    class Crash(Exception):
        pass

    def half_then_crash(real_write):
        def write(data):  # half the bytes reach the file, then the process "dies"
            real_write(data[: len(data) // 2])
            raise Crash

        return write

    real_open = open

    def crashing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            handle.write = half_then_crash(handle.write)
        return handle

    monkeypatch.setattr("builtins.open", crashing_open)
    with pytest.raises(Crash):
        training.save_tensors(path, {"w": torch.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    tensors, meta = training.load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


def test_crash_between_write_and_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    training.save_tensors(path, {"w": torch.ones(2)}, {"step": 1})
    monkeypatch.setattr(
        checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash"))
    )
    with pytest.raises(checkpoint.CheckpointError, match="crash.*previous model.safetensors"):
        training.save_tensors(path, {"w": torch.zeros(2)}, {"step": 2})
    monkeypatch.undo()
    assert training.load_tensors(path)[1] == {"step": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_truncated_checkpoint_is_reported(tmp_path):
    path = tmp_path / "last.safetensors"
    training.save_tensors(path, {"w": torch.ones(100)}, {"step": 1})
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(checkpoint.CheckpointError, match="truncated"):
        training.load_tensors(path)


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, steps=10)
    trainer = tiny_trainer(config, [])
    real_loss = trainer.model.loss

    def poisoned(batch, carry):
        loss = real_loss(batch, carry)
        return loss._replace(total=loss.total * math.nan) if trainer.step == 6 else loss

    trainer.model.loss = poisoned
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 7.*lower --lr"):
        trainer.fit()
    assert training.load_tensors(tmp_path / "run" / "last.safetensors")[1]["trainer"]["step"] == 4


def test_plateau_cuts_the_learning_rate(tmp_path):
    config = tiny_config(tmp_path, schedule="plateau", patience=1, factor=0.5)
    trainer = tiny_trainer(config, [])
    trainer.best = 0.0  # nothing can improve on this
    trainer._after_eval(1.0)
    assert trainer.plateau_scale == 0.5


def test_a_run_whose_validation_stops_improving_stops_and_keeps_its_best(tmp_path):
    config = tiny_config(tmp_path, steps=40, eval_every=4, stop_after=2)
    trainer = tiny_trainer(config, [])
    scores = iter([3.0, 2.0, 2.5, 2.4] + [9.0] * 10)  # best at the 2nd, then two worse
    trainer.task.evaluate = lambda model, world: {"val_loss": next(scores)}
    lines = io.StringIO()
    trainer.progress = Progress(lines)
    trainer.fit()
    assert trainer.step == 16 and trainer.best == 2.0
    assert "not improved for 2 evaluations" in lines.getvalue()
    assert training.load_tensors(tmp_path / "run" / "model.safetensors")[1]["step"] == 8
    again = tiny_trainer(tiny_config(tmp_path, steps=40, eval_every=4, stop_after=2), [])
    again.restore()  # a resumed run that had stalled stops at once
    assert again.should_stop() and again.step == 16


def test_same_seed_same_run(tmp_path):
    a: list = []
    b: list = []
    tiny_trainer(tiny_config(tmp_path / "a", steps=5), a).fit()
    tiny_trainer(tiny_config(tmp_path / "b", steps=5), b).fit()
    assert a == b


# --- checkpoints every N steps, exact from any of them ---


def test_checkpoint_every_saves_between_evaluations(tmp_path):
    trainer = tiny_trainer(tiny_config(tmp_path, steps=10, checkpoint_every=3), [])
    saves, save = [], trainer.save_last
    trainer.save_last = lambda: (saves.append(trainer.step), save())
    trainer.fit()
    assert saves == [3, 4, 6, 8, 9, 10]  # every 3 steps, and at each evaluation (4, 8, end)


def test_a_crash_between_evaluations_resumes_exactly_from_the_step_checkpoint(tmp_path):
    straight: list = []
    tiny_trainer(tiny_config(tmp_path / "a", checkpoint_every=3), straight).fit()
    crashed: list = []
    trainer = tiny_trainer(tiny_config(tmp_path / "b", checkpoint_every=3), crashed)
    real_loss = trainer.model.loss

    def crash_at_step_8(batch, carry):
        if trainer.step == 7:
            raise KeyboardInterrupt  # the process dies; nothing is saved on the way out
        return real_loss(batch, carry)

    trainer.model.loss = crash_at_step_8
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    rest: list = []
    resumed = tiny_trainer(tiny_config(tmp_path / "b", checkpoint_every=3), rest)
    resumed.restore()
    assert resumed.step == 6 and resumed.carry is not None  # mid-stream: the state comes back
    resumed.fit()
    assert crashed[:6] + rest == straight  # bit for bit
    a = read_metrics(tmp_path / "a" / "run" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    assert [{**r, "elapsed": 0} for r in a] == [{**r, "elapsed": 0} for r in b]


def test_resume_before_any_checkpoint_starts_from_step_0(tmp_path):
    config = tiny_config(tmp_path, steps=4)
    first: list = []
    trainer = tiny_trainer(config, first)
    trainer.fit()
    (tmp_path / "run" / "last.safetensors").unlink()  # killed after the line, before the save
    again: list = []
    resumed = tiny_trainer(config, again)
    resumed.restore()
    assert resumed.step == 0 and not (tmp_path / "run" / "metrics.jsonl").read_text()
    resumed.fit()
    assert again == first


def test_a_torn_last_metrics_line_is_dropped_a_damaged_one_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 4}\n{"step": 8}\n{"step": 1')  # killed mid-line
    training.keep_metrics_until(path, 8)
    assert path.read_text() == '{"step": 4}\n{"step": 8}\n'
    path.write_text('{"step": 4}\nnot json\n{"step": 8}\n')
    with pytest.raises(checkpoint.CheckpointError, match=r"metrics.jsonl, line 2: not a metrics"):
        training.keep_metrics_until(path, 8)


# --- checkpoints cannot run code, and damage is detected ---


class Planted:
    """Unpickling this creates a file: the harmless stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def trained_run(tmp_path):
    config = tiny_config(tmp_path, steps=4)
    charlm.train(config, progress=Progress(io.StringIO()))
    return config, tmp_path / "run"


@pytest.mark.parametrize("name", ["evil.pkl", "optimizer.pt", "weights.bin", "state.pickle"])
def test_a_run_directory_with_a_pickle_in_it_is_refused(tmp_path, name):
    config, run = trained_run(tmp_path)
    marker = tmp_path / "code-ran"
    (run / name).write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(checkpoint.CheckpointError, match=f"{name}.*loading never unpickles"):
        charlm.load_run(run, "cpu")
    with pytest.raises(checkpoint.CheckpointError, match="never unpickles"):
        tiny_trainer(config, []).restore()
    assert not marker.exists()


def test_a_pickle_posing_as_a_checkpoint_is_refused(tmp_path):
    config, run = trained_run(tmp_path)
    torch.save({"model.w": torch.ones(2)}, run / "last.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=r"is a pickle \(torch.save format\)"):
        tiny_trainer(config, []).restore()


def test_a_changed_byte_anywhere_is_detected(tmp_path):
    _, run = trained_run(tmp_path)
    path = run / "model.safetensors"
    good = path.read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    in_header = good.index(b"val_loss")
    digit = next(i for i in range(in_header, header_end) if chr(good[i]).isdigit())
    for where in (digit, len(good) - 5):  # the recorded val_loss, a weight
        damaged = bytearray(good)
        damaged[where] = ord("7") if damaged[where] != ord("7") else ord("3")
        path.write_bytes(bytes(damaged))
        with pytest.raises(checkpoint.CheckpointError, match="SHA-256 mismatch"):
            checkpoint.load_tensors(path)
    path.write_bytes(good[: len(good) - 100])
    with pytest.raises(checkpoint.CheckpointError, match="SHA-256 mismatch"):
        checkpoint.load_tensors(path)  # cut inside the weights: the header is whole


def test_a_safetensors_file_without_a_digest_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.w": torch.ones(2)}, tmp_path / "model.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="no SHA-256"):
        checkpoint.load_tensors(tmp_path / "model.safetensors")


def test_the_command_sets_the_allocator_and_a_trainer_does_not(tmp_path, monkeypatch):
    """glibc's setting is process-wide: a Trainer inside a user's program leaves it alone;
    ``rnnkit train``, whose process is its own, turns it on (rnnkit.training.heap)."""
    calls = []
    monkeypatch.setattr(heap, "keep_freed_blocks", lambda: calls.append("kept") or True)
    config = tiny_config(tmp_path, steps=4)
    tiny_trainer(config, []).fit()
    assert calls == []
    flags = f"--data {config.data} --hidden 16 --batch-size 4 --window 8 --steps 4 --eval-every 2"
    flags += f" --precision fp32 --device cpu --out {tmp_path / 'command'}"
    assert cli.main(["train", "charlm", *flags.split()]) == 0
    assert calls == ["kept"]


def test_a_run_says_its_precision_and_why(tmp_path, monkeypatch):
    """The precision of a run is the user's --precision, or the hardware's answer for auto,
    and the first line of the run says which (rnnkit.kernels.hardware)."""
    monkeypatch.setattr(hardware, "default_precision", lambda device: ("fp32", "fp32: no bf16"))
    for precision, said in (("fp32", "precision fp32 (--precision fp32)"),
                            ("auto", "precision fp32: no bf16")):  # fmt: skip
        config = tiny_config(tmp_path / precision, precision=precision, steps=1)
        vocab, streams, val_ids = charlm.prepare(config)
        stream = io.StringIO()
        trainer = Trainer(config, charlm.build_task(config, vocab, streams, val_ids), config.out,
                          Progress(stream))  # fmt: skip
        assert stream.getvalue().splitlines()[0] == said and trainer.bf16 is False
    monkeypatch.setattr(hardware, "default_precision", lambda device: ("bf16", "bf16: native"))
    assert training.precision_of("auto", torch.device("cpu")) == (True, "bf16: native")
    assert training.precision_of("fp32", torch.device("cpu"))[0] is False


def test_a_minutes_run_evaluates_by_the_clock_and_its_final_evaluation_fits_the_limit(tmp_path):
    """A run too slow to reach --eval-every still evaluates several times in --minutes, every
    tenth of the limit or ten evaluations' time, whichever is longer, and stops early enough
    for its last evaluation to end within the limit (a clock that advances one second a
    reading: a step takes one second, an evaluation ``cost`` seconds)."""
    # (minutes, cost, evaluations, seconds apart): a tenth of 120 s; ten evaluations of 2 s
    for minutes, cost, count, gap in ((2.0, 1, 10, 12), (1.0, 2, 3, 20)):
        config = tiny_config(tmp_path / str(cost), steps=0, minutes=minutes, eval_every=1000)
        trainer = tiny_trainer(config, [])
        readings = iter(range(10**6))
        trainer.clock = lambda readings=readings: float(next(readings))
        evaluate = trainer.task.evaluate

        def slow_evaluation(model, world, evaluate=evaluate, readings=readings, cost=cost):
            for _ in range(cost - 1):
                next(readings)
            return evaluate(model, world)

        trainer.task.evaluate = slow_evaluation
        assert trainer.fit() == "done"
        run = tmp_path / str(cost) / "run"
        elapsed = [r["elapsed"] for r in read_metrics(run / "metrics.jsonl")]
        assert count - 1 <= len(elapsed) <= count + 1, elapsed
        assert 60 * minutes - 1 <= elapsed[-1] <= 60 * minutes  # the limit, not past it
        gaps = [b - a for a, b in zip(elapsed[:-2], elapsed[1:-1], strict=True)]
        assert all(gap <= g <= gap + 1 + cost for g in gaps), gaps


def test_the_rate_counts_training_steps_from_the_second_on(tmp_path):
    trainer = tiny_trainer(tiny_config(tmp_path, steps=3), [])
    readings = iter([0.0, 10.0, 10.0, 10.5, 11.0, 11.5])  # a slow first step, then 0.5 s
    trainer.clock = lambda: next(readings)
    loss = trainer.train_step()
    assert "| ? tok/s |" in trainer.status(loss)
    trainer.train_step(), trainer.train_step()
    assert f"| {4 * 8 / 0.5 / 1000:.1f}k tok/s |" in trainer.status(loss)  # 4 x 8 tokens a step
