"""Conversion between rnnkit's layers and torch.nn's RNN, LSTM and GRU.

:func:`from_torch` builds a layer of a torch.nn module's sizes and copies its weights;
:func:`to_torch` builds the torch.nn module that computes what a layer computes. The layers
call them as ``rnnkit.LSTM.from_torch(module)`` and ``layer.to_torch()``.

A copy is all a conversion needs: the cells name their parameters as torch.nn does and stack
the gate blocks in torch.nn's order (:mod:`rnnkit.cells`). Only where they live differs:
rnnkit keeps one cell per layer and direction, ``cells[k]`` with ``k = layer * D +
direction``; torch.nn keeps ``weight_ih_l{layer}``, with ``_reverse`` for the second
direction. :func:`copy_weights` is the one place that maps the two. What one side cannot
hold is refused, not dropped: torch.nn's projections (``proj_size``), rnnkit's peepholes.

Shape letters: L layers, D directions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from rnnkit.layers import RecurrentLayer


def from_torch(cls: type[RecurrentLayer], module: nn.RNNBase, **options) -> RecurrentLayer:
    """A ``cls`` layer with ``module``'s sizes and a copy of its weights, on its device and
    dtype; ``options`` go to the layer (``kernel=``, ``precision=``, ...)."""
    if type(module) is not cls.torch_type:
        raise TypeError(
            f"{cls.__name__}.from_torch expects {cls.torch_type.__name__}, "
            f"got {type(module).__name__}"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size > 0 has no rnnkit equivalent yet")
    layer = cls(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        **cls._torch_options(module),
        **options,
    )
    copy_weights(layer, module, to_torch=False)
    return layer.to(module.weight_ih_l0.device, module.weight_ih_l0.dtype)


def to_torch(layer: RecurrentLayer) -> nn.RNNBase:
    """The torch.nn module of ``layer``'s sizes with a copy of its weights, on its device and
    dtype."""
    if getattr(layer, "peephole", False):
        raise ValueError(
            "torch.nn.LSTM has no peephole connections; this layer cannot "
            "be converted without changing what it computes"
        )
    module = layer.torch_type(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.bias,
        batch_first=layer.batch_first,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
        **layer._torch_kwargs(),
    )
    module = module.to(layer.cells[0].weight_ih.device, layer.cells[0].weight_ih.dtype)
    copy_weights(layer, module, to_torch=True)
    return module


def copy_weights(layer: RecurrentLayer, module: nn.RNNBase, to_torch: bool) -> None:
    """Copy every weight and bias from ``layer`` into ``module`` (``to_torch``), or back."""
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if layer.bias else [])
    with torch.no_grad():
        for k, cell in enumerate(layer.cells):
            depth, direction = divmod(k, layer.num_directions)
            suffix = f"_l{depth}" + ("_reverse" if direction else "")
            for name in names:
                ours, theirs = getattr(cell, name), getattr(module, name + suffix)
                (theirs if to_torch else ours).copy_(ours if to_torch else theirs)
