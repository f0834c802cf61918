"""Pooling: one vector per sequence from a recurrent layer's outputs, over real steps only.

The many-to-one shape of the lectures: the layer reads the whole sequence, then one vector
stands for it. Three ways, each blind to padding, so a sequence pools the same alone and in
a padded batch:
- ``last``: the state after the last real step. In a bidirectional layer the forward half
  is read at each sequence's last real step and the reverse half at step 0, where the
  reverse direction has read the whole sequence (the final states of both directions, as
  torch.nn's ``h_n`` holds them);
- ``mean``: the average of the outputs over the real steps;
- ``max``: the element-wise maximum over the real steps (Collobert et al. 2011, "Natural
  language processing (almost) from scratch", section 3.3.2, for convolutions; Conneau et
  al. 2017, "Supervised learning of universal sentence representations", section 3.2.1, for
  BiLSTMs).

Shape letters: T time, B batch, H hidden size, D directions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Pooling = Literal["last", "mean", "max"]


def real_steps(lengths: Tensor, T: int) -> Tensor:
    """(T, B) boolean mask, True at each sequence's real steps."""
    steps = torch.arange(T, device=lengths.device)
    return steps.unsqueeze(1) < lengths.unsqueeze(0)


def last_step(output: Tensor, lengths: Tensor, directions: int) -> Tensor:
    """(T, B, D*H) -> (B, D*H): forward half at step length-1, reverse half at step 0."""
    T, B, size = output.shape
    last = (lengths - 1).view(1, B, 1).expand(1, B, size)
    forward = output.gather(0, last)[0]  # (B, D*H)
    if directions == 1:
        return forward
    H = size // 2
    return torch.cat([forward[:, :H], output[0, :, H:]], dim=1)


def mean_over_steps(output: Tensor, lengths: Tensor) -> Tensor:
    """(T, B, D*H) -> (B, D*H): the average over each sequence's real steps."""
    mask = real_steps(lengths, output.shape[0]).unsqueeze(2)  # (T, B, 1)
    total = output.masked_fill(~mask, 0.0).sum(0)
    return total / lengths.unsqueeze(1).to(output.dtype)


def max_over_steps(output: Tensor, lengths: Tensor) -> Tensor:
    """(T, B, D*H) -> (B, D*H): the element-wise maximum over each sequence's real steps."""
    mask = real_steps(lengths, output.shape[0]).unsqueeze(2)  # (T, B, 1)
    return output.masked_fill(~mask, float("-inf")).max(0).values


def pool(output: Tensor, lengths: Tensor, how: Pooling, directions: int = 1) -> Tensor:
    """One (B, D*H) vector per sequence from a layer's (T, B, D*H) output and (B,) lengths."""
    if output.dim() != 3 or lengths.shape != (output.shape[1],):
        raise ValueError(
            f"pool expects output (T, B, D*H) and lengths (B,), got {tuple(output.shape)} "
            f"and {tuple(lengths.shape)}"
        )
    lengths = lengths.to(output.device)
    if how == "last":
        return last_step(output, lengths, directions)
    if how == "mean":
        return mean_over_steps(output, lengths)
    if how == "max":
        return max_over_steps(output, lengths)
    raise ValueError(f"pooling must be 'last', 'mean' or 'max', got {how!r}")
