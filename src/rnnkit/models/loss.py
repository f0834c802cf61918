"""What every task's model returns from ``loss(batch, carry)``: the one shape the trainer reads.

A model's loss is a sum over the units of its batch (characters, words, sequences, frames)
with their weight, not a mean: a batch cut over several processes then adds up to the loss
of the whole batch exactly, however unevenly the parts fall (the trainer divides the summed
loss by the summed weight of every process's part, :mod:`rnnkit.training.distributed`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor


class Loss(NamedTuple):
    """A batch's summed loss and what it counts."""

    total: Tensor  # () the loss summed over the batch's units, float32
    weight: float  # what ``total`` is divided by for the mean: units, or their class weights
    tokens: int  # the units the run reports (characters, target tokens, frames, ...)
    carry: Any = None  # what the next step starts from (truncated BPTT's state), or None
