"""Validation loss against training time: rnnkit's charlm defaults vs a plain PyTorch script.

Both models train in one process on the ``shakespeare`` corpus (90/10 split by position),
taking turns step by step; each has its own clock that counts only its own training steps,
so load from other programs on the machine falls on both alike. At each checkpoint
(seconds of a model's own training) both are scored on the whole validation split, which
is not counted as training time. The plain script is what the issue describes: one
torch.nn.LSTM of 512 units under bf16 autocast (float32 on a CPU without native bf16,
where torch.nn.LSTM refuses bf16), batch 32, window 128, AdamW 3e-3 with cosine decay over
the budget, clipping at 1.0, dropout 0.25 on the LSTM's output, no warm-up; it reads the same
char-rnn streams with the state carried, through the same trainer.

    PYTHONPATH=src python benchmarks/charlm.py --seconds 90 [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import os
import tempfile
import time

import torch
from docs_section import write_section  # benchmarks/, beside this script
from torch import nn

from rnnkit.data import Streams
from rnnkit.tasks import charlm
from rnnkit.training import heap
from rnnkit.training.trainer import Progress, Task, TrainConfig, Trainer, autocast

START, END = "<!-- charlm:start -->", "<!-- charlm:end -->"
CLOCKS = {
    "wall": "Training time is wall-clock time of each model's own steps.",
    "thread": "Training time is the CPU time of each model's main thread during its own steps "
    "(`--clock thread`, OMP_WAIT_POLICY=PASSIVE): on a shared machine this estimates the "
    "wall-clock time the same steps take on an idle one, where the main thread is never "
    "descheduled. It is an estimate, not a measurement.",
}


class PlainLSTM(nn.Module):
    """Embedding -> one torch.nn.LSTM -> linear: what a user would write in a page."""

    def __init__(self, vocab_size: int, hidden: int = 512, dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.LSTM(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        if state is not None:
            state = tuple(s.float() for s in state)
        output, state = self.rnn(self.embed(x), state)  # (T, B, H)
        return self.head(self.drop(output)), state  # (T, B, V)

    loss = charlm.CharLM.loss  # the same next-character loss as rnnkit's model


def plain_trainer(vocab, train_ids, seconds: float, run_dir: str) -> Trainer:
    config = TrainConfig(
        lr=3e-3,
        warmup=0,
        min_lr=0.0,
        clip=1.0,
        minutes=seconds / 60,
        eval_every=10**9,
        precision="auto",  # bf16 where the CPU has it: torch.nn.LSTM fails under bf16 elsewhere
        device="cpu",
    )
    torch.manual_seed(config.seed)
    streams = Streams(train_ids, batch_size=32, window=128, source="shakespeare")
    task = Task(PlainLSTM(len(vocab)), lambda step, rank, size: streams[step], None, len(streams))
    return Trainer(config, task, run_dir, Progress(io.StringIO()))


def rnnkit_trainer(seconds: float, run_dir: str):
    config = dataclasses.replace(
        charlm.Config(), data="shakespeare", minutes=seconds / 60, eval_every=10**9, out=run_dir
    )
    vocab, streams, val_ids = charlm.prepare(config)
    task = charlm.build_task(config, vocab, streams, val_ids)
    return config, vocab, streams, val_ids, Trainer(config, task, run_dir, Progress(io.StringIO()))


def val_loss(trainer: Trainer, val_ids) -> float:
    trainer.model.eval()
    with torch.no_grad(), autocast(trainer.device, trainer.bf16):
        loss = charlm.score(trainer.model, val_ids, batch_size=64, window=256)
    trainer.model.train()
    return loss


def race(trainers: dict, val_ids, marks: list[float]) -> list[dict]:
    """Step the trainers in turn; score each when its own clock passes each mark."""
    rows, due = [], {name: list(marks) for name in trainers}
    while any(due.values()):
        for name, trainer in trainers.items():
            if not due[name]:
                continue
            loss = trainer.train_step()
            if trainer.elapsed >= due[name][0]:
                mark = due[name].pop(0)
                rows.append(
                    {
                        "model": name,
                        "mark": mark,
                        "elapsed": trainer.elapsed,
                        "step": trainer.step,
                        "chars": trainer.tokens,
                        "train_loss": loss,
                        "val_loss": val_loss(trainer, val_ids),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], marks: list[float]) -> str:
    by = {(r["model"], r["mark"]): r for r in rows}
    lines = [
        "| training time | rnnkit defaults: val (train) | steps, chars | "
        "plain script: val (train) | steps, chars |",
        "|---|---|---|---|---|",
    ]
    for mark in marks:
        cells = [f"{mark:g} s"]
        for name in ("rnnkit", "plain"):
            r = by[(name, mark)]
            cells += [
                f"**{r['val_loss']:.3f}** ({r['train_loss']:.2f})",
                f"{r['step']}, {r['chars'] / 1e6:.2f} M",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(rows, marks, config, one_hot, command, load_before, load_after, clock) -> str:
    inputs = "one-hot input" if one_hot else f"embedding {config.embedding or config.hidden}"
    settings = (
        f"{config.cell} {config.layers}x{config.hidden}, {inputs}, dropout "
        f"{charlm.dropout_for(config)}, batch "
        f"{config.batch_size}, window {config.window}, {config.optimizer} "
        f"{config.lr:g} {config.schedule} (warm-up {config.warmup}, to "
        f"{config.min_lr:g} of lr), clip {config.clip}, precision {config.precision}"
    )
    return "\n".join(
        [
            START,
            "## charlm: validation loss against training time",
            "",
            f"Command: `{command}`  ",
            f"Date: {datetime.date.today()}; torch {torch.__version__}, "
            f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads; load average "
            f"{load_before:.1f} before, {load_after:.1f} after (other work on the machine slows "
            "both models alike).",
            "",
            "Corpus `shakespeare` (complete works, 84 symbols with the unknown symbol; the issue's "
            "reference figures are on tiny-shakespeare, 65 symbols, so they do not transfer "
            "exactly). Validation: the last 10% by position, all of it, in nats per character.",
            "",
            CLOCKS[clock],
            "",
            f"rnnkit defaults: {settings}.  ",
            "Plain script: torch.nn.LSTM 1x512, embedding 512, batch 32, window 128, AdamW 3e-3 "
            "cosine to 0, clip 1.0, dropout 0.25 on its output, bf16 autocast where the CPU has "
            "bf16 (float32 here otherwise).",
            "",
            table(rows, marks),
            "",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="training time of each")
    parser.add_argument("--marks", default="", help="comma-separated seconds to score at")
    parser.add_argument("--write", default="", help="markdown file to write the section into")
    parser.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="thread: count the main thread's CPU time, an estimate of the "
        "wall-clock time on an idle machine when the machine is shared",
    )
    args = parser.parse_args()
    heap.keep_freed_blocks()  # as rnnkit train does
    marks = [float(m) for m in args.marks.split(",") if m] or [
        args.seconds / 6,
        args.seconds / 3,
        args.seconds * 2 / 3,
        args.seconds,
    ]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        config, vocab, streams, val_ids, ours = rnnkit_trainer(args.seconds, tmp + "/rnnkit")
        train_ids = torch.cat([streams.inputs.reshape(-1), streams.targets[-1, -1:]])
        plain = plain_trainer(vocab, train_ids, args.seconds, tmp + "/plain")
        for trainer in (ours, plain):
            trainer.clock = time.thread_time if args.clock == "thread" else time.perf_counter
        rows = race({"rnnkit": ours, "plain": plain}, val_ids, marks)
    command = f"PYTHONPATH=src python benchmarks/charlm.py --seconds {args.seconds:g}"
    if args.clock == "thread":
        command += " --clock thread"
    load_after, one_hot = os.getloadavg()[0], ours.model.one_hot
    text = section(rows, marks, config, one_hot, command, load_before, load_after, args.clock)
    print(text)
    if args.write:
        write_section(args.write, text, START, END)


if __name__ == "__main__":
    main()
