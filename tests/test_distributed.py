"""Data-parallel training: two real processes under torchrun against one process."""

import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import torch

from rnnkit.data import Window
from rnnkit.tasks import charlm
from rnnkit.training import distributed
from rnnkit.training.checkpoint import CheckpointError, load_tensors
from rnnkit.training.trainer import Progress, Trainer

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 12

# Run by each of the two processes. Three runs: without dropout (checked against one process
# by the test), with dropout straight through, and with dropout stopped halfway and resumed
# (each process's dropout state and carried state come back from the checkpoint).
WORKER = """
import io, json, sys
import torch
import torch.distributed as dist
from rnnkit.tasks import charlm
from rnnkit.training.trainer import Progress, Trainer

torch.set_num_threads(1)


class Checked(Trainer):
    def train_step(self):
        loss = super().train_step()
        flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        parts = [torch.empty_like(flat) for _ in range(self.world.size)]
        dist.all_gather(parts, flat)
        self.agreed.append(all(torch.equal(parts[0], p) for p in parts))
        self.losses.append(loss)
        if self.step == self.stop_at and self.world.rank == 1:
            self.interrupted = True  # Ctrl-C reaching one process stops both
        return loss


def run(settings, resume=False, stop_at=0):
    config = charlm.Config(**settings)
    vocab, streams, val_ids = charlm.prepare(config)
    trainer = Checked(config, charlm.build_task(config, vocab, streams, val_ids), config.out,
                      Progress(io.StringIO()))
    trainer.agreed, trainer.losses, trainer.stop_at = [], [], stop_at
    if resume:
        trainer.restore()
    trainer.fit()
    return trainer


runs = json.loads(sys.argv[1])
plain = run(runs["plain"])
straight = run(runs["straight"])
first = run(runs["halted"], stop_at=6)
rest = run(runs["halted"], resume=True)
report = {
    "world": plain.world.size,
    "agreed": plain.agreed + straight.agreed + first.agreed + rest.agreed,
    "plain": plain.losses,
    "straight": straight.losses,
    "halted": first.losses + rest.losses,
    "stopped": [first.step, first.interrupted],
}
if plain.world.rank == 0:
    with open(runs["report"], "w") as f:
        json.dump(report, f)
"""


def settings(tmp_path, name: str, **changes) -> dict:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    defaults = dict(
        data=str(corpus),
        hidden=16,
        layers=2,
        batch_size=4,
        window=8,
        steps=12,
        minutes=0.0,
        eval_every=4,
        warmup=2,
        dropout=0.0,
        precision="fp32",
        device="cpu",
        out=str(tmp_path / name),
    )
    return {**defaults, **changes}


def one_process(config: charlm.Config) -> tuple[Trainer, list]:
    vocab, streams, val_ids = charlm.prepare(config)
    task = charlm.build_task(config, vocab, streams, val_ids)
    losses: list = []

    real_loss = task.model.loss

    def recording_loss(batch, carry):
        loss = real_loss(batch, carry)
        losses.append((loss.total / loss.weight).item())
        return loss

    task.model.loss = recording_loss
    trainer = Trainer(config, task, config.out, Progress(io.StringIO()))
    trainer.fit()
    return trainer, losses


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Launch the worker under ``torchrun --standalone --nproc_per_node 2``, once."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    runs = {
        "plain": settings(tmp, "plain"),
        "straight": settings(tmp, "straight", dropout=0.2),
        "halted": settings(tmp, "halted", dropout=0.2),
        "report": str(tmp / "report.json"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(script), json.dumps(runs)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, json.loads((tmp / "report.json").read_text())


def test_two_processes_train_and_agree_on_the_weights_after_every_step(two_processes):
    _, report = two_processes
    assert report["world"] == 2
    assert len(report["agreed"]) == 12 + 12 + 6 + 6 and all(report["agreed"])
    assert report["plain"][-1] < report["plain"][0]  # it learns


def test_two_processes_match_one_process_with_the_same_global_batch(two_processes, one_thread):
    tmp, report = two_processes
    config = charlm.Config(**settings(tmp, "single"))
    single, losses = one_process(config)
    assert report["plain"] == pytest.approx(losses, rel=1e-5)
    two = load_tensors(tmp / "plain" / "last.safetensors")[0]
    one = load_tensors(tmp / "single" / "last.safetensors")[0]
    weights = [k for k in one if k.startswith("model.")]
    assert weights and all(torch.allclose(two[k], one[k], rtol=1e-4, atol=1e-6) for k in weights)
    # each stream's hidden state stays with its process, and is saved with it
    joined = torch.cat([two["carry.0"], two["rank1.carry.0"]], 1)
    assert torch.allclose(joined, one["carry.0"], rtol=1e-4, atol=1e-6)


def test_only_rank_0_writes_metrics_each_line_once_with_global_tokens(two_processes):
    tmp, _ = two_processes
    rows = metrics(tmp / "plain")
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert [r["tokens"] for r in rows] == [4 * 8 * 4, 4 * 8 * 8, 4 * 8 * 12]  # the global batch


def test_resume_on_two_processes_is_exact(two_processes):
    tmp, report = two_processes
    assert report["stopped"] == [6, True] and len(report["halted"]) == 12
    assert report["halted"] == report["straight"]  # bit for bit, dropout and carry included
    assert [r["train_loss"] for r in metrics(tmp / "halted")] == [
        r["train_loss"] for r in metrics(tmp / "straight")
    ]


def test_a_two_process_checkpoint_is_not_resumed_by_one(two_processes, one_thread):
    tmp, _ = two_processes
    config = charlm.Config(**settings(tmp, "plain"))
    vocab, streams, val_ids = charlm.prepare(config)
    trainer = Trainer(config, charlm.build_task(config, vocab, streams, val_ids), config.out)
    with pytest.raises(CheckpointError, match="written by 2 process.*resumed by 1"):
        trainer.restore()


def test_a_window_shards_into_equal_blocks_of_streams():
    inputs = torch.arange(24).view(3, 8)  # (T, B)
    window = Window(inputs, inputs + 1, fresh=True)
    blocks = [window.shard(rank, 4) for rank in range(4)]
    assert all(b.inputs.shape == (3, 2) and b.fresh for b in blocks)
    assert torch.equal(torch.cat([b.inputs for b in blocks], 1), inputs)
    assert torch.equal(torch.cat([b.targets for b in blocks], 1), inputs + 1)
    with pytest.raises(ValueError, match="--batch-size 8 .* over 3 processes"):
        window.shard(0, 3)


def test_one_process_world_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world, device = distributed.join(torch.device("cpu"))
    assert world == distributed.World(0, 1, 0) and device == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK is not set: start the run with torchrun"):
        distributed.join(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not a whole number"):
        distributed.join(torch.device("cpu"))


def test_one_process_world_shares_maps_and_sums_everything():
    world = distributed.ALONE
    assert world.share([1, 2, 3]) == [1, 2, 3]
    assert world.map(lambda some: [x * 10 for x in some], [1, 2, 3]) == [10, 20, 30]
    assert world.sum(1.5, 2) == [1.5, 2]
    assert distributed.World(1, 3).share(list(range(7))) == [1, 4]


def test_a_world_without_torchrun_addresses_is_refused(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT are not set"):
        distributed.meeting_store(distributed.World(0, 2), timedelta(seconds=1))
