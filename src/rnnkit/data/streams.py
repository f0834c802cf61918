"""Batching as char-rnn does it: contiguous streams read in windows, state carried between.

The encoded corpus is cut into ``batch_size`` contiguous streams (row b of a (B, L) table
holds characters b*L .. b*L+L-1), and step s reads window ``s mod windows`` of every stream
at once. Window w+1 of a stream continues where window w stopped, so the hidden state at the
end of one window is the right initial state for the next: the caller carries it forward and
detaches it (truncated BPTT, Williams & Peng 1990; char-rnn's ``CharSplitLMMinibatchLoader``).
The table is rebuilt identically on every run, so step s always reads the same window: a
resumed run continues on the same data position. Trained on several processes, each takes
its own block of the streams (:meth:`Window.shard`), and with it its own carried state.

Shape letters: N corpus length, B streams (batch), L stream length, T window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnkit.data.corpus import CorpusError


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on the first part, validate on the last ``val_fraction``: by position, unshuffled."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(round(len(ids) * (1.0 - val_fraction)))
    return ids[:cut], ids[cut:]


@dataclass(frozen=True)
class Window:
    """One step's data: inputs and next-character targets, and whether state starts fresh."""

    inputs: torch.Tensor  # (T, B) int64
    targets: torch.Tensor  # (T, B) int64, inputs shifted one character ahead
    fresh: bool  # True at the first window of a pass: the streams restart, so does the state

    def shard(self, rank: int, size: int) -> Window:
        """Process ``rank``'s block of the streams, one of ``size`` equal blocks (data-parallel
        training, :mod:`rnnkit.training.distributed`): its own streams, so its own carried state."""
        B = self.inputs.shape[1]
        if B % size:
            raise ValueError(
                f"--batch-size {B} is the global batch and must split evenly over {size} "
                f"processes; use a multiple of {size}"
            )
        cols = slice(rank * (B // size), (rank + 1) * (B // size))
        x, y = self.inputs[:, cols].contiguous(), self.targets[:, cols].contiguous()
        return Window(x, y, self.fresh)  # (T, B/size)


class Streams:
    """``batch_size`` contiguous streams of ``ids`` read ``window`` characters at a time."""

    def __init__(self, ids: torch.Tensor, batch_size: int, window: int, source: str = "corpus"):
        need = batch_size * window + 1
        if len(ids) < need:
            raise CorpusError(
                f"{source}: {len(ids)} characters is shorter than one window of every stream "
                f"(batch_size {batch_size} x window {window} + 1 = {need}); "
                "use a longer text or lower --batch-size / --window"
            )
        length = (len(ids) - 1) // batch_size
        self.inputs = ids[: batch_size * length].view(batch_size, length)  # (B, L)
        self.targets = ids[1 : batch_size * length + 1].view(batch_size, length)  # (B, L)
        self.window = window
        self.windows = length // window  # full windows per pass; the ragged tail is dropped

    def __len__(self) -> int:
        return self.windows

    def __getitem__(self, step: int) -> Window:
        """The window read at training step ``step`` (passes repeat from the start)."""
        w = step % self.windows
        cols = slice(w * self.window, (w + 1) * self.window)
        x = self.inputs[:, cols].t().contiguous()  # (T, B)
        y = self.targets[:, cols].t().contiguous()  # (T, B)
        return Window(x, y, fresh=(w == 0))


def eval_windows(ids: torch.Tensor, batch_size: int, window: int):
    """The characters of ``ids`` once each, as windows of up to ``batch_size`` streams.

    Unlike training, the ragged tail is kept (the last window may be shorter; fewer than
    ``batch_size`` characters at the very end are left out), and the number of streams
    shrinks so that each has at least one window. Yields (inputs, targets), each (T, B).
    """
    if len(ids) < 2:
        raise CorpusError(f"{len(ids)} characters cannot be scored: at least 2 are needed")
    streams = max(1, min(batch_size, (len(ids) - 1) // window))
    length = (len(ids) - 1) // streams
    x = ids[: streams * length].view(streams, length)
    y = ids[1 : streams * length + 1].view(streams, length)
    for start in range(0, length, window):
        yield x[:, start : start + window].t(), y[:, start : start + window].t()
