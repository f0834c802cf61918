"""The one trainer every task uses: optimiser, schedule, clipping, stopping, checkpoints.

A task hands the trainer a model and two functions:
- the model's ``loss(batch, carry) -> Loss(total, weight, tokens, carry)``
  (:class:`rnnkit.models.loss.Loss`): the loss of a batch summed over its units, and
  ``carry``, what one step passes to the next (the hidden state in truncated BPTT, or None);
  the trainer detaches it and saves it in checkpoints;
- ``batch(step, rank, size)``: process ``rank``'s part of the data for training step
  ``step`` (all of it on one process); the same step always reads the same data, so a
  resumed run continues on the same data position;
- ``evaluate(model, world) -> {"val_loss": ..., ...}``: validation metrics, under
  ``no_grad``, each process scoring its share (:class:`rnnkit.training.distributed.World`).

A run directory holds ``config.json`` (written by the task), ``metrics.jsonl`` (one line per
evaluation), ``loss.png``, ``model.safetensors`` (the best weights by validation loss) and
``last.safetensors`` (everything needed to resume: weights, optimiser state, RNG state, the
carried state, and the step, as tensors plus JSON metadata; nothing is pickled). It is saved
at each evaluation and every ``checkpoint_every`` steps. Every checkpoint is written to a
temporary file and renamed over the old one, so a crash leaves either the old file or the
new one, never half of one (:mod:`rnnkit.training.checkpoint`).

Resuming is exact: a run killed at any moment (SIGKILL included) and resumed from its last
checkpoint computes the same losses, bit for bit, as a run never stopped, when its limit is
``steps`` or ``epochs`` (a ``minutes`` limit depends on the clock). The checkpoint holds what
the next step depends on: data position (the step), weights, optimiser, schedule and plateau
state, the random state (dropout) and the carried hidden state; metric lines written after
it are dropped on resume, so the resumed run writes each once.

Under ``torchrun`` the same trainer runs in every process (:mod:`rnnkit.training.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.layers import detach_state
from rnnkit.training import distributed
from rnnkit.training.checkpoint import (  # noqa: F401  (MODEL_FILE and load_model are the tasks' too)
    LAST_FILE,
    MODEL_FILE,
    CheckpointError,
    append_line,
    carry_tensors,
    check_writable,
    keep_metrics_until,
    load_model,
    load_tensors,
    optimizer_tensors,
    plot_losses,
    remove_stale_temporaries,
    restore_carry,
    restore_optimizer,
    save_tensors,
)
from rnnkit.training.options import (  # noqa: F401  (the tasks' too)
    TrainConfig,
    autocast,
    limits_given,
    pick_device,
    precision_of,
    use_bf16,
)
from rnnkit.training.progress import Progress, clock
from rnnkit.training.schedule import lr_factor, make_optimizer

METRICS_FILE = "metrics.jsonl"
EVALS_PER_RUN = 10  # under --minutes, evaluate up to this often whatever the step rate...
EVAL_SHARE = 0.1  # ... as long as evaluations take at most this share of the time
# The trainer's own progress, saved in last.safetensors as JSON and restored as it was.
PROGRESS = (
    "step", "tokens", "elapsed", "best", "plateau_scale", "bad_evals", "since_best", "recent",
)  # fmt: skip


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the step and what to try."""


@dataclass
class Task:
    """What a task hands the trainer (see the module docstring)."""

    model: nn.Module  # with loss(batch, carry) -> rnnkit.models.loss.Loss
    batch: Callable[[int, int, int], Any]  # (step, rank, processes) -> this process's data
    evaluate: Callable[[nn.Module, distributed.World], dict]  # -> {"val_loss": ..., ...}
    steps_per_epoch: int  # steps in one pass over the training data
    unit: str = "tokens"  # what the loss's token count counts, for loss.png's x axis
    loss_label: str = "loss"  # what the loss is, for loss.png's y axis


class Trainer:
    """Runs a :class:`Task` under a :class:`TrainConfig`, writing everything into ``run_dir``."""

    def __init__(self, config: TrainConfig, task: Task, run_dir: Path, progress=None):
        if not (config.steps or config.epochs or config.minutes):
            raise ValueError("give at least one stopping limit: --steps, --epochs or --minutes")
        if config.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be 0 or more, got {config.checkpoint_every}")
        self.config, self.task, self.run_dir = config, task, Path(run_dir)
        self.world, self.device = distributed.join(pick_device(config.device))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.world.rank == 0:
            check_writable(self.run_dir)
        self.bf16, precision = precision_of(config.precision, self.device)
        self.model = task.model.to(self.device)
        self.objective = distributed.wrap(self.world, self.model, self.device)  # DDP on several
        if self.world.size > 1:  # each process draws its own dropout masks
            torch.manual_seed(config.seed + self.world.rank)
        self.optimizer = make_optimizer(config, self.model.parameters())
        quiet = self.world.rank > 0  # rank 0 speaks for every process
        self.progress = Progress(open(os.devnull, "w")) if quiet else progress or Progress()
        self.progress.line(f"precision {precision}")
        self.step, self.tokens, self.elapsed, self.carry = 0, 0, 0.0, None
        self.reserve = 0.0  # seconds of the last evaluation, kept back for the final one
        self.time_evaluated: float | None = None  # the clock at the last evaluation by time
        self.rate = [0, 0.0, 0]  # tokens and seconds of this process's steps, steps counted
        self.best, self.plateau_scale, self.bad_evals = math.inf, 1.0, 0
        self.since_best = 0  # evaluations since the best one, for --stop-after
        self.recent: list[float] = []  # training losses since the last evaluation
        self.interrupted = False
        self.clock = time.perf_counter  # a benchmark on a shared machine may count CPU time

    def fraction_done(self) -> float:
        c, done = self.config, []
        if c.steps:
            done.append(self.step / c.steps)
        if c.epochs:
            done.append(self.step / (c.epochs * self.task.steps_per_epoch))
        if c.minutes:  # the final evaluation must fit in the limit too
            done.append((self.elapsed + self.reserve) / (60.0 * c.minutes))
        return max(done)

    def train_step(self) -> float:
        """One optimiser step on the data of the current step; returns its loss (the mean
        over every process's part of the batch)."""
        start = self.clock()
        factor = lr_factor(self.config, self.step, self.fraction_done(), self.plateau_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * factor
        batch = self.task.batch(self.step, self.world.rank, self.world.size)
        self.model.train()
        with autocast(self.device, self.bf16):
            part = self.objective(batch, self.carry)
        total, weight, tokens = distributed.global_sums(self.world, *part[:3])
        value = total / weight if weight > 0 else math.nan
        if not math.isfinite(value):  # every process sees the same sums, so all stop here
            raise NonFiniteLoss(self._nonfinite_message(value))
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients: each part's sum over the global weight,
        # times the processes, averages to the gradient of the whole batch's mean loss.
        (part.total * (self.world.size / weight)).backward()
        carry, tokens = part.carry, round(tokens)
        if self.config.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.carry = None if carry is None else detach_state(carry)
        self.step, self.tokens = self.step + 1, self.tokens + tokens
        seconds = self.clock() - start
        self.elapsed += seconds
        self._count_rate(tokens, seconds)
        self.recent.append(value)
        return value

    def _nonfinite_message(self, value: float) -> str:
        kept = self.run_dir / LAST_FILE
        kept_text = f"the last good checkpoint is {kept}" if kept.exists() else "no checkpoint yet"
        return (
            f"loss is {value} at step {self.step + 1}; stopped ({kept_text}). "
            f"Try a lower --lr (now {self.config.lr:g}) or gradient clipping (--clip 1.0, "
            f"now {self.config.clip:g})."
        )

    def evaluate(self) -> dict:
        """Validation metrics, one line in metrics.jsonl, the loss curve, and checkpoints.

        Every process scores its share of the validation data; rank 0 writes."""
        start = self.clock()
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.bf16):
            metrics = self.task.evaluate(self.model, self.world)
        self.model.train()
        train_loss = sum(self.recent) / len(self.recent) if self.recent else None
        self.recent = []
        self.reserve = self.clock() - start
        self.elapsed += self.reserve
        row = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": round(self.elapsed, 2),
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            **metrics,
        }
        if self.world.rank == 0:
            append_line(self.run_dir / METRICS_FILE, json.dumps(row))
        self._after_eval(metrics["val_loss"])
        if self.world.rank == 0:
            plot_losses(self.run_dir, self.task.unit, self.task.loss_label)
        return row

    def _after_eval(self, val_loss: float) -> None:
        if val_loss < self.best:
            self.best, self.bad_evals, self.since_best = val_loss, 0, 0
            if self.world.rank == 0:
                model = {f"model.{k}": v for k, v in self.model.state_dict().items()}
                meta = {"step": self.step, "val_loss": val_loss}
                save_tensors(self.run_dir / MODEL_FILE, model, meta)
        else:
            self.bad_evals, self.since_best = self.bad_evals + 1, self.since_best + 1
            if self.config.schedule == "plateau" and self.bad_evals >= self.config.patience:
                self.plateau_scale, self.bad_evals = self.plateau_scale * self.config.factor, 0
        self.save_last()

    def process_state(self) -> tuple[dict, str]:
        """What differs between processes: the random state and the carried hidden state."""
        tensors, carry_kind = carry_tensors(self.carry)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return tensors, carry_kind

    def save_last(self) -> None:
        """Write ``last.safetensors``; every process takes part, rank 0 writes (rank r's own
        state under ``rank{r}.``, rank 0's unprefixed, as a one-process run has it)."""
        own, carry_kind = self.process_state()
        states = distributed.gather_states(self.world, own)
        if self.world.rank > 0:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim, optim_meta = optimizer_tensors(self.optimizer)
        tensors.update(optim)
        for rank, state in enumerate(states):
            tensors.update({f"{rank_prefix(rank)}{k}": v for k, v in state.items()})
        meta = {
            "trainer": {name: getattr(self, name) for name in PROGRESS},
            "optimizer": optim_meta,
            "carry": carry_kind,
            "world_size": self.world.size,
        }
        save_tensors(self.run_dir / LAST_FILE, tensors, meta)

    def restore(self) -> None:
        """Continue from ``last.safetensors``: same weights, optimiser, RNG, state and step.

        A run killed before its first checkpoint starts again from step 0, as it first did.
        """
        path = self.run_dir / LAST_FILE
        if self.world.rank == 0:
            remove_stale_temporaries(self.run_dir)
        if not path.exists():
            self.progress.line(f"no checkpoint in {self.run_dir} yet: starting from step 0")
            if self.world.rank == 0:
                keep_metrics_until(self.run_dir / METRICS_FILE, 0)
            return
        tensors, meta = load_tensors(path)
        if meta.get("world_size", 1) != self.world.size:
            raise CheckpointError(
                f"{path}: written by {meta['world_size']} process(es), resumed by "
                f"{self.world.size}; each process's carried and random state are in it, so "
                f"resume with {meta['world_size']} (torchrun --nproc_per_node/--nnodes)"
            )
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(self.optimizer, tensors, meta["optimizer"])
        prefix = rank_prefix(self.world.rank)
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.carry = restore_carry(own, meta["carry"], self.device)
        torch.set_rng_state(own["rng.torch"])
        if "rng.cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng.cuda"], self.device)
        for name in PROGRESS:  # a checkpoint older than since_best has not got it
            setattr(self, name, meta["trainer"].get(name, getattr(self, name)))
        if self.world.rank == 0:
            keep_metrics_until(self.run_dir / METRICS_FILE, self.step)

    def _count_rate(self, tokens: int, seconds: float) -> None:
        """The rate the status line shows: this process's training steps only, from its
        second step on (the first one also loads and warms up the kernels)."""
        tokens_so_far, seconds_so_far, steps = self.rate
        if steps:
            tokens_so_far, seconds_so_far = tokens_so_far + tokens, seconds_so_far + seconds
        self.rate = [tokens_so_far, seconds_so_far, steps + 1]

    def status(self, loss: float) -> str:
        rate = self.rate[0] / self.rate[1] if self.rate[1] > 0 else math.nan
        done = self.fraction_done()
        left = self.elapsed * (1 - done) / done if done > 0 else math.inf
        return (
            f"step {self.step} | loss {loss:.3f} | "
            f"{'?' if math.isnan(rate) else f'{rate / 1000:.1f}k'} tok/s | "
            f"{clock(self.elapsed)} elapsed, {clock(left) if left < 1e7 else '?'} left"
        )

    @contextlib.contextmanager
    def _ctrl_c_saves(self):
        """Ctrl-C finishes the current step, then the run saves and stops; twice quits at once."""

        def handler(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def evaluation_due_by_time(self) -> bool:
        """Under --minutes, whether a tenth of the limit has passed since the last evaluation
        by time (or ten evaluations' time, if longer): a slow run evaluates several times even
        if it never reaches --eval-every steps, and evaluating takes at most a tenth of it.
        Read from the clock all processes agreed on, so they all decide alike."""
        if not self.config.minutes:
            return False
        interval = max(60.0 * self.config.minutes / EVALS_PER_RUN, self.reserve / EVAL_SHARE)
        if self.time_evaluated is None:
            self.time_evaluated = self.elapsed
        due = self.elapsed - self.time_evaluated >= interval
        if due:
            self.time_evaluated = self.elapsed
        return due

    def should_stop(self) -> bool:
        """A limit is reached, validation stopped improving (``--stop-after``) or Ctrl-C was
        pressed (on any process: all stop together)."""
        self.elapsed, self.interrupted, self.reserve = distributed.agree(
            self.world, self.elapsed, self.interrupted, self.reserve
        )
        return self.interrupted or self.fraction_done() >= 1.0 or self.stalled()

    def stalled(self) -> bool:
        """Validation has not improved for ``--stop-after`` evaluations (every process
        computed the same validation loss, so all agree)."""
        return 0 < self.config.stop_after <= self.since_best

    def fit(self) -> str:
        """Train until a limit, Ctrl-C or a non-finite loss; return why it stopped."""
        every = self.config.checkpoint_every
        with self._ctrl_c_saves():
            while not self.should_stop():
                by_time = self.evaluation_due_by_time()
                loss = self.train_step()
                self.progress.show(self.status(loss))
                if by_time or self.step % self.config.eval_every == 0:
                    self.progress.line(self._eval_text(self.evaluate()))
                elif every and self.step % every == 0:
                    self.save_last()
        if self.interrupted:
            self.save_last()
            self.progress.line(f"interrupted at step {self.step}; saved {self.run_dir / LAST_FILE}")
        elif self.recent:  # steps trained since the last evaluation
            self.progress.line(self._eval_text(self.evaluate()))
        if self.stalled():
            self.progress.line(
                f"stopped at step {self.step}: validation has not improved for "
                f"{self.since_best} evaluations; the best weights (val_loss {self.best:.4f}) "
                f"are in {self.run_dir / MODEL_FILE}"
            )
        distributed.barrier(self.world)  # rank 0 has written what the task may read next
        return "interrupted" if self.interrupted else "done"

    def _eval_text(self, row: dict) -> str:
        extra = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        train = f"train_loss {row['train_loss']:.4f} " if row["train_loss"] is not None else ""
        return f"step {row['step']} | {train}{extra} | {clock(row['elapsed'])}"


def rank_prefix(rank: int) -> str:
    """Where a process's own state sits in ``last.safetensors``."""
    return "" if rank == 0 else f"rank{rank}."
