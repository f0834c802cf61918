"""What ``rnnkit train charlm`` trains when a choice is left unset: the batch, window and
dropout picked from the corpus's size and the budget, measured on the machine at hand.

The choices rest on two numbers the run's budget allows: its optimiser **steps** and its
**passes** over the training text. Under ``--minutes`` both come from the rate of a few
training steps timed here, on this machine, before the run (a rule written in seconds
would hold on one CPU only); under ``--steps`` or ``--epochs`` they are counted.

- The batch is the largest of 128, 64 and 32 streams that leaves the run :data:`MIN_STEPS`
  optimiser steps: at a budget of a few thousand steps more updates of a smaller batch
  learn more than fewer of a larger one, for the same characters (a 0.94 MB corpus, GRU
  384: at 90 s batch 32 reached 1.53 nats/char and batch 128 1.82; at 600 s of one
  thread, batch 32 in 4,648 steps 1.446, batch 64 in 2,508 1.461, batch 128 in 1,342 1.477).
- Dropout grows with the passes: a run that sees its text a few times underfits and loses
  by dropout; one that sees a small text many times overfits without it.
- A short text shrinks the window and the batch so that every stream holds
  :data:`STREAM_WINDOWS` windows.

Every choice is still a flag, and a flag the user sets is never changed. The measurements
behind each number are in docs/benchmarks.md ("charlm on a grid of corpora"), made with
``benchmarks/charlm_race.py`` and ``benchmarks/charlm_grid.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from rnnkit.data.corpus import CorpusError

WINDOW = 64  # characters per window, unless the text is too short for it
MIN_WINDOW = 8  # the window never shrinks below this; a text under two of them is refused
STREAM_WINDOWS = 8  # a short text is cut into streams of at least this many windows each
BATCH = 128  # streams, for a run of many passes
# The batch is halved from BATCH while the run would take fewer than MIN_STEPS steps, down to
# MIN_BATCH (below it a step's products are too small to keep the CPU busy: batch 16 was no
# better than 32 at 90 s).
MIN_STEPS, MIN_BATCH = 4000, 32
# Dropout by passes over the text: (at most this many passes, dropout), first match wins.
DROPOUT_BY_PASSES = ((3.0, 0.0), (8.0, 0.1), (20.0, 0.2), (math.inf, 0.3))


@dataclass
class Choice:
    """What the rule picked and why, as the run's first lines say it."""

    batch_size: int
    window: int
    dropout: float
    passes: float  # estimated passes over the training text (nan: unknown)
    notes: list[str]


def fit_window(window: int | None, chars: int, source: str) -> int:
    """``--window`` as given, or the default shrunk to an eighth of a short text (down to
    :data:`MIN_WINDOW`); a text shorter than two windows is refused."""
    chosen = window or max(MIN_WINDOW, min(WINDOW, (chars - 1) // STREAM_WINDOWS))
    if chars < 2 * chosen + 1:
        raise CorpusError(
            f"{source}: {chars} training characters is shorter than two windows of "
            f"{chosen} characters; use a longer text or a lower --window"
        )
    return chosen


def fit_batch(batch: int, window: int, chars: int) -> int:
    """At most ``batch`` streams, each at least :data:`STREAM_WINDOWS` windows long (or two,
    for a text too short for that), and at least one."""
    for windows in (STREAM_WINDOWS, 2):
        fits = (chars - 1) // (window * windows)
        if fits >= 1:
            return max(1, min(batch, fits))
    return 1


def passes_of(config, chars: int, batch: int, window: int, rate: float | None) -> float:
    """Passes over ``chars`` training characters the run's first limit allows; ``rate`` in
    characters a second is needed for a ``--minutes`` limit (nan without one)."""
    budgets = []
    if config.steps:
        budgets.append(config.steps * batch * window / chars)
    if config.epochs:
        budgets.append(config.epochs)
    if config.minutes:
        budgets.append(60.0 * config.minutes * rate / chars if rate else math.nan)
    return min(budgets) if budgets else math.nan


def dropout_by_passes(passes: float) -> float:
    if math.isnan(passes):
        return DROPOUT_BY_PASSES[-1][1]  # no limit at all: the longest run
    return next(p for most, p in DROPOUT_BY_PASSES if passes <= most)


def choose(config, chars: int, source: str, rate_of) -> Choice:
    """The batch, window and dropout of a run over ``chars`` training characters.

    ``rate_of(batch, window)`` times a few training steps of the model and returns its
    characters a second; it is called only under ``--minutes`` and when a choice is unset.
    """
    notes = []
    window = fit_window(config.window, chars, source)
    batch = config.batch_size or fit_batch(BATCH, window, chars)  # a batch given is kept
    if batch < BATCH and not config.batch_size or window < WINDOW and not config.window:
        notes.append(f"a short text: batch {batch} x window {window}")
    unset = config.batch_size is None or config.dropout is None
    rate = rate_of(batch, window) if config.minutes and unset else None
    passes = passes_of(config, chars, batch, window, rate)
    if config.batch_size is None and not config.steps:  # under --steps the steps are fixed
        while batch // 2 >= MIN_BATCH and steps_of(passes, chars, batch, window) < MIN_STEPS:
            batch //= 2
            rate = rate_of(batch, window) if rate else None
            passes = passes_of(config, chars, batch, window, rate)
        if batch < BATCH and not notes:
            steps = steps_of(passes, chars, batch, window)
            notes.append(f"batch {batch} for more steps (about {steps:,.0f})")
    dropout = config.dropout if config.dropout is not None else dropout_by_passes(passes)
    return Choice(batch, window, dropout, passes, notes)


def steps_of(passes: float, chars: int, batch: int, window: int) -> float:
    """Optimiser steps in ``passes`` passes over ``chars`` characters (inf: no limit)."""
    return math.inf if math.isnan(passes) else passes * chars / (batch * window)


def describe(config, choice: Choice, chars: int) -> str:
    """One line: what is trained, on how much text, for how long, and why."""
    size = f"{chars / 1e6:.1f} MB" if chars >= 100_000 else f"{chars:,} characters"
    budget = f"{config.minutes:g} min" if config.minutes else (
        f"{config.steps} steps" if config.steps else f"{config.epochs:g} epochs"
    )  # fmt: skip
    passes = "" if math.isnan(choice.passes) else f", about {choice.passes:.1f} passes"
    line = (
        f"{config.cell.upper()} {config.layers}x{config.hidden}, batch {choice.batch_size} x "
        f"window {choice.window}, dropout {choice.dropout:g}: a {size} corpus, {budget}{passes}"
    )
    return "; ".join([line, *choice.notes])


def measured_rate(model, batch: int, window: int, bf16: bool, device) -> float:
    """Characters a second of forward and backward passes of ``model`` on random windows of
    (window, batch) on this machine: one warm-up step, then the best of two timed ones.
    The weights are not changed (no optimiser step) and the gradients are cleared."""
    ids = torch.randint(0, model.vocab_size, (window + 1, batch), generator=torch.Generator())
    ids = ids.to(device)
    times = []
    with torch.random.fork_rng(devices=[]):  # dropout's draws here leave the run's alone
        for _ in range(3):
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, _ = model(ids[:-1])
            loss = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), ids[1:].flatten()
            )
            loss.backward()
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return batch * window / min(times[1:])
