"""The loop over time for one cell in one direction: the readable reference.

``scan(cell, x, state, mask, reverse)`` unrolls ``cell`` over a sequence with the same
weights at every step, and autograd over this Python loop is backpropagation through
time. The hand-written BPTT in :mod:`rnnkit.kernels` computes exactly the same function.

Masking rules (``mask[t, b]`` is True at the real steps of sequence b):
- a padded step leaves the state unchanged, so the final state is the state at each
  sequence's last real step;
- the output at a padded step is exactly zero;
- in reverse, padded steps come first and leave the initial state untouched, so the
  reverse direction starts at each sequence's own last real step.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells import State


def map_state(fn, *states):
    """Apply ``fn`` to each tensor of one or more states of the same structure."""
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states, strict=True))
    return fn(*states)


def scan(cell, x: Tensor, state: State, mask: Tensor | None = None, reverse: bool = False):
    """Run ``cell`` over ``x`` (T, B, I) from ``state``; return (output (T, B, H), final state)."""
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = [None] * x.shape[0]
    for t in steps:
        h_t, new_state = cell(x[t], state)
        if mask is None:
            state, outputs[t] = new_state, h_t
        else:
            m = mask[t].unsqueeze(1)  # (B, 1)
            state = map_state(lambda new, old, m=m: torch.where(m, new, old), new_state, state)
            outputs[t] = h_t.masked_fill(~m, 0.0)
    return torch.stack(outputs), state  # (T, B, H)
