"""Every task under torchrun: 2 processes against 1, a worker killed and the group restarted,
and two torchrun agents meeting over loopback as two machines would."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from rnnkit.training.checkpoint import load_tensors

TASKS = ("charlm", "classify", "seqclass", "tag", "forecast", "translate", "caption", "speech")

# Each process trains every task for 50 steps, dropout off, from the same seed, and rank 0
# writes each step's loss (the mean over the whole global batch). Run without torchrun it is
# the one-process run of the same global batches.
WORKER = r"""
import io, json, sys
from pathlib import Path
import torch
from rnnkit import tasks
from rnnkit.tasks import speech
from rnnkit.tools.bench_distributed import training_task
from rnnkit.training.trainer import Progress, Trainer

torch.set_num_threads(1)
work = Path(sys.argv[1])
common = dict(device="cpu", precision="fp32", minutes=0.0, steps=50, eval_every=25, warmup=5,
              seed=3)
text = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 12
(work / "corpus.txt").write_text(text)
rows = ["text,label"] + [f"{w} film {w} plot {i},{'pos' if w in 'good fine' else 'neg'}"
                         for i in range(60) for w in ("good", "bad", "fine", "dull")]
(work / "reviews.csv").write_text("\n".join(rows) + "\n")
TINY = {
    "charlm": dict(data=str(work / "corpus.txt"), hidden=16, layers=2, batch_size=4, window=8,
                   dropout=0.0),
    "classify": dict(data=str(work / "reviews.csv"), embedding=8, hidden=8, batch_size=12,
                     baseline=False, dropout=0.0, min_count=1),
    "seqclass": dict(hidden=8, batch_size=8, dropout=0.0),
    "tag": dict(sequences=60, hidden=8, batch_size=8, dropout=0.0),
    "forecast": dict(input_window=12, horizon=4, hidden=8, batch_size=16, dropout=0.0),
    "translate": dict(numbers=400, embedding=8, hidden=16, batch_size=16, val_pairs=20,
                      dropout=0.0),
    "caption": dict(train_scenes=64, val_scenes=8, test_scenes=8, image_size=32, blocks=2,
                    width=4, convs=1, feature_size=12, embedding=8, hidden=16, batch_size=8,
                    batch_norm=False, dropout=0.0, val_images=8),
}


def speech_task(config):
    gen = torch.Generator().manual_seed(0)
    texts = ["one", "two", "three", "four", "five", "six", "seven", "eight"] * 2
    series = [torch.randn(30 + 4 * i, 12, generator=gen) for i in range(len(texts))]
    labels = [speech.BLANK] + sorted(set("".join(texts)))
    parts = {"train": (series, texts), "val": (series[:4], texts[:4])}
    return speech.build_task(config, labels, parts)


losses = {}
for name in sys.argv[2].split(","):
    module = tasks.load_task(name)
    if name == "speech":
        config = module.Config(**common, hidden=8, batch_size=6, dropout=0.0, out=str(work / name))
        task = speech_task(config)
    else:
        config = module.Config(**common, **TINY[name], out=str(work / name))
        task = training_task(name, config)
    trainer = Trainer(config, task, config.out, Progress(io.StringIO()))
    losses[name] = [trainer.train_step() for _ in range(config.steps)]
    trainer.evaluate()
if trainer.world.rank == 0:
    (work / "losses.json").write_text(json.dumps(losses))
"""


def run_worker(tmp_path, processes: int) -> dict:
    work = tmp_path / f"p{processes}"
    work.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, str(script), str(work), ",".join(TASKS)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        str(processes)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "losses.json").read_text())


@pytest.fixture(scope="module")
def task_losses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    return run_worker(tmp, 1), run_worker(tmp, 2)


@pytest.mark.parametrize("name", TASKS)
def test_two_processes_match_one_on_the_same_global_batch(task_losses, name):
    one, two = task_losses
    assert len(one[name]) == len(two[name]) == 50
    assert one[name][-1] < one[name][0]  # it learns, so the comparison is of training
    assert two[name] == pytest.approx(one[name], rel=1e-4)


# The command under torchrun, with one change: on the first attempt, rank 1 kills itself with
# SIGKILL after step ``kill_at`` (0: never), as a machine failing would.
KILLER = r"""
import os, signal, sys
from rnnkit import cli
from rnnkit.training import trainer as training

kill_at = int(sys.argv[1])
real_step = training.Trainer.train_step


def train_step(self):
    loss = real_step(self)
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if kill_at and first_attempt and self.world.rank == 1 and self.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss


training.Trainer.train_step = train_step
sys.exit(cli.main(sys.argv[2:]))
"""

CORPUS = "the cat sat on the mat. the dog sat on the log. a cat and a dog met. " * 12
COMMANDS = {
    "charlm": "train charlm --hidden 16 --layers 2 --batch-size 4 --window 8 --dropout 0.2",
    "tag": "train tag --sequences 60 --hidden 8 --batch-size 8 --dropout 0.2",
}
LIMITS = "--steps 30 --minutes 0 --eval-every 10 --checkpoint-every 5 --warmup 2 --device cpu"


def command(tmp_path, name: str, out: str) -> list[str]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    data = ["--data", str(corpus)] if name == "charlm" else []
    return [*COMMANDS[name].split(), *data, *LIMITS.split(), "--out", str(tmp_path / out)]


def torchrun(tmp_path, args: list[str], kill_at: int = 0, launch: list[str] | None = None):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    launch = launch or ["--standalone", "--nproc_per_node", "2", "--max-restarts", "1"]
    run = [sys.executable, "-m", "torch.distributed.run", *launch, str(script), str(kill_at)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*run, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return err


def weights(run) -> dict:
    tensors, meta = load_tensors(run / "last.safetensors")
    assert meta["trainer"]["step"] == 30
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """Each command's run on 2 processes, never interrupted: its directory and torchrun's log."""
    tmp = tmp_path_factory.mktemp("straight")
    runs = {name: torchrun(tmp, command(tmp, name, name)) for name in COMMANDS}  # side by side
    return {name: (tmp / name, finish(process)) for name, process in runs.items()}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_killed_worker_restarts_the_group_and_the_run_ends_as_if_never_killed(
    tmp_path, straight, name
):
    run, log = straight[name]
    killed = finish(torchrun(tmp_path, command(tmp_path, name, "killed"), kill_at=17))
    assert "exitcode: -9" in killed and "exitcode: -9" not in log  # killed, then restarted
    a, b = weights(run), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    rows = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [10, 20, 30]  # each evaluation once, none half-written


def loopback_port() -> int | None:
    """A free TCP port on 127.0.0.1, or None where loopback networking is not available."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_two_torchrun_agents_meet_over_loopback_as_two_machines(tmp_path, straight):
    port = loopback_port()
    if port is None:
        pytest.skip("no loopback networking here: two agents cannot meet")
    meet = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback"]  # fmt: skip
    args = command(tmp_path, "charlm", "nodes")
    agents = [torchrun(tmp_path, args, launch=meet) for _ in range(2)]
    for agent in agents:
        finish(agent)
    a, b = weights(tmp_path / "nodes"), weights(straight["charlm"][0])
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run as 2 processes on one node
