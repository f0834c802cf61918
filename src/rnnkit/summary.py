"""The cost of a network: weights and multiply-accumulates, per layer and in total.

In the manner of the hardware lectures' tables ("VGG-16: weights 7.0M, MACs 1.43G"):
for each layer, its parameters, its multiply-accumulates per time step and per sequence
of ``seq_len`` steps. What is counted:

- a recurrent layer of G gate blocks, per direction and step: G*H*(I + H) MACs for the
  two matrix products (G = 1 Elman, 3 GRU, 4 LSTM), plus 3*H for peepholes;
- a linear layer applied at every step: in*out MACs per step;
- an embedding is a table look-up: weights, no MACs.
Element-wise work (gate non-linearities, additions) is left out, as the lectures leave
out activations: it is small beside the products and not a multiply-accumulate.

Works on rnnkit's layers and on torch.nn.RNN/LSTM/GRU alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnkit.layers import LSTM, RecurrentLayer

TORCH_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@dataclass
class Row:
    name: str  # the module's name in the model, with the stacked layer index
    kind: str  # the module's type, with directions
    params: int  # parameters (weights and biases)
    macs_per_step: int  # multiply-accumulates for one time step of one sequence


@dataclass
class Summary:
    rows: list[Row]
    seq_len: int  # time steps in one sequence, for the per-sequence column

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs_per_step(self) -> int:
        return sum(r.macs_per_step for r in self.rows)

    @property
    def macs_per_sequence(self) -> int:
        return self.macs_per_step * self.seq_len

    def __str__(self) -> str:
        head = ("layer", "type", "weights", "MACs/step", f"MACs/seq (T={self.seq_len})")
        body = [
            (
                r.name,
                r.kind,
                human(r.params),
                human(r.macs_per_step),
                human(r.macs_per_step * self.seq_len),
            )
            for r in self.rows
        ]
        total = (
            "total",
            "",
            human(self.params),
            human(self.macs_per_step),
            human(self.macs_per_sequence),
        )
        widths = [max(len(line[k]) for line in [head, *body, total]) for k in range(5)]
        fmt = "  ".join(f"{{:{'<' if k < 2 else '>'}{w}}}" for k, w in enumerate(widths))
        rule = "-" * (sum(widths) + 8)
        lines = [fmt.format(*head), rule, *(fmt.format(*b) for b in body), rule, fmt.format(*total)]
        lines.append(
            f"weights {human(self.params)}, MACs {human(self.macs_per_sequence)} "
            f"per sequence of {self.seq_len} steps"
        )
        return "\n".join(lines)


def human(n: int) -> str:
    """7_000_000 -> '7.0M', 1_430_000_000 -> '1.43G', as the lectures' tables print them."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"
    return str(n)


def summary(model: nn.Module, seq_len: int) -> Summary:
    """Weights and MACs of every layer of ``model`` for sequences of ``seq_len`` steps."""
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    rows, covered = [], set()
    for name, module in model.named_modules():
        if any(name != c and (c == "" or name.startswith(c + ".")) for c in covered):
            continue  # inside a recurrent layer already counted
        if isinstance(module, RecurrentLayer | nn.RNNBase):
            covered.add(name)
            rows += _recurrent_rows(name or type(module).__name__, module)
        elif isinstance(module, nn.Linear):
            rows.append(
                Row(name, "Linear", _count(module), module.in_features * module.out_features)
            )
        elif isinstance(module, nn.Embedding):
            rows.append(Row(name, "Embedding", _count(module), 0))
        elif _count(module, recurse=False):
            rows.append(Row(name, type(module).__name__, _count(module, recurse=False), 0))
    return Summary(rows, seq_len)


def _recurrent_rows(name: str, module) -> list[Row]:
    ours = isinstance(module, RecurrentLayer)
    gates = module.cells[0].gates if ours else TORCH_GATES[module.mode]
    peephole = ours and isinstance(module, LSTM) and module.peephole
    directions = 2 if module.bidirectional else 1
    kind = type(module).__name__ + (" x2 dir" if directions == 2 else "")
    H, rows = module.hidden_size, []
    for layer in range(module.num_layers):
        I = module.input_size if layer == 0 else H * directions
        if ours:
            params = sum(_count(c) for c in module.cells[layer * directions :][:directions])
        else:
            params = sum(
                p.numel()
                for n, p in module.named_parameters()
                if n.endswith(f"_l{layer}") or n.endswith(f"_l{layer}_reverse")
            )
        macs = directions * (gates * H * (I + H) + (3 * H if peephole else 0))
        rows.append(Row(f"{name}[{layer}]", kind, params, macs))
    if ours and module.learn_init:
        rows.append(Row(f"{name}.initial_state", "learned s_0", _count(module.initial_state), 0))
    return rows


def _count(module: nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


# -- memory in training -------------------------------------------------------------------


@dataclass
class TrainingMemory:
    """Bytes that one training step keeps, measured on a real forward pass."""

    tokens: int  # tokens in the measured batch (T * B)
    activations: dict[str, int]  # bytes saved for backward, by module ("" = outside modules)
    parameter_bytes: int  # the weights themselves

    def __str__(self) -> str:
        lines = [
            f"training memory, measured on a batch of {self.tokens} tokens (activations saved "
            "for backward, each charged to the module that saved it first):"
        ]
        for name, size in self.activations.items():
            label = name or "(loss and other functions)"
            lines.append(f"  {label:28s} {size_human(size / self.tokens):>10s} per token")
        total = sum(self.activations.values())
        lines.append(f"  {'total':28s} {size_human(total / self.tokens):>10s} per token")
        lines.append(
            f"  weights {size_human(self.parameter_bytes)}; with their gradients and AdamW's two "
            f"moments {size_human(4 * self.parameter_bytes)}, whatever the batch"
        )
        return "\n".join(lines)


def size_human(n: float) -> str:
    """Bytes in binary units: 930 -> '930 B', 3932 -> '3.8 KiB'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def training_memory(model: nn.Module, loss_of_batch, tokens: int) -> TrainingMemory:
    """Run ``loss_of_batch()`` once and add up the tensors autograd saves for the backward pass.

    Each saved tensor is counted once (by storage) and charged to the innermost named
    module running when it was saved; the parameters themselves are not activations.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, charged, stack = set(), {}, [""]

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in parameters:
            seen.add(key)
            charged[stack[-1]] = charged.get(stack[-1], 0) + storage.nbytes()
        return tensor

    def enter(name):
        return lambda module, args: stack.append(name)  # returns None: inputs unchanged

    def leave(module, args, output):
        stack.pop()  # and returns None: the output is unchanged

    handles = []
    for name, module in model.named_children():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_of_batch()
    finally:
        for handle in handles:
            handle.remove()
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return TrainingMemory(tokens, charged, parameter_bytes)
