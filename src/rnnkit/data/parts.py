"""A process's part of a global batch, for data-parallel training.

Under ``torchrun`` every process builds the same global batch of a step (the shuffles are
seeded by the step), and trains on its own part of it: every ``size``-th example, from the
one at its rank. Striding rather than cutting in blocks gives each process examples of
every length when a batch is sorted by length (bucketed batches), so the processes finish
their steps at about the same time. As torch's DistributedSampler pads an epoch by repeating
examples, a batch with fewer examples than processes gives the processes left over a repeat
of one example, so that every process has a step to take.
"""

from __future__ import annotations

from collections.abc import Sequence


def part(rows: Sequence, rank: int, size: int) -> list:
    """Process ``rank``'s rows of a global batch of ``rows``, one of ``size`` processes."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not one of {size} processes")
    if not len(rows):
        raise ValueError("a batch needs at least one example")
    mine = list(rows[rank::size])
    return mine or [rows[rank % len(rows)]]
