"""The models that are exported, built from the parts of a task's model: the whole-sequence
model and the one-step model, with their signatures (the names, dtypes and shapes of inputs
and outputs that the sidecar lists) and example inputs to trace them with.

Shape letters as in :mod:`rnnkit.export`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import LSTMCell
from rnnkit.models.pooling import pool

# --- the parts of a task's model ---------------------------------------------------------


@dataclass
class Parts:
    """What every exportable model is: inputs -> recurrent stack -> head (-> pooling)."""

    task: str
    rnn: nn.Module  # the rnnkit recurrent layer
    head: nn.Linear  # per step, or per sequence after pooling
    embed: nn.Embedding | None = None  # token ids in; None: features in
    one_hot: int = 0  # token ids in as one-hot vectors of this size (charlm --one-hot)
    pooling: str = ""  # "last", "mean" or "max": one output per sequence
    returns_state: bool = False  # the final state is an output too (charlm, forecast)


def parts_of(task: str, model: nn.Module) -> Parts:
    """The parts of a task's model; encoder-decoders with search are refused."""
    if task == "charlm":
        return Parts(task, model.rnn, model.head, model.embed, model.vocab_size * model.one_hot,
                     returns_state=True)  # fmt: skip
    if task == "classify":
        return Parts(task, model.rnn, model.head, model.embed, pooling=model.pooling)
    if task == "seqclass":
        return Parts(task, model.rnn, model.head, pooling=model.pooling)
    if task == "tag":
        return Parts(task, model.rnn, model.head)
    if task == "forecast":
        return Parts(task, model.rnn, model.head, returns_state=True)
    raise refusal(task)


def refusal(task: str) -> ValueError:
    return ValueError(
        f"a {task} run has no whole-sequence model to export: its output is written by greedy "
        "or beam search in Python around an encoder and a decoder; export --step writes the "
        "encoder and one decoder step, and the search is the caller's (see docs/export.md)"
    )


# --- the exported models -----------------------------------------------------------------


class Inputs(nn.Module):
    """Token ids through the embedding (or one-hot), features as they are."""

    def __init__(self, parts: Parts):
        super().__init__()
        self.embed, self.one_hot = parts.embed, parts.one_hot

    def forward(self, x):
        if self.one_hot:
            return F.one_hot(x, self.one_hot).float()
        return self.embed(x) if self.embed is not None else x


class SequenceModel(nn.Module):
    """(x (B, T) or (B, T, F), lengths (B,)) -> logits (B, K) with pooling, else outputs
    (B, T, O), and with ``returns_state`` the final state h_n[, c_n] (L*D, B, H)."""

    def __init__(self, parts: Parts, recurrent: nn.Module):
        super().__init__()
        self.inputs, self.recurrent, self.head = Inputs(parts), recurrent, parts.head
        self.pooling, self.returns_state = parts.pooling, parts.returns_state
        self.directions = parts.rnn.num_directions
        self.lstm = isinstance(parts.rnn.cells[0], LSTMCell)
        zeros = parts.rnn._zero_state(1, torch.device("cpu"), torch.float32)
        initial = tuple(p.detach() for p in parts.rnn.initial_state) or zeros  # learn_init
        self.register_buffer("initial_h", initial[0].clone())  # (L*D, 1, H)
        self.register_buffer("initial_c", initial[-1].clone())

    def forward(self, x: Tensor, lengths: Tensor):
        inputs = self.inputs(x.transpose(0, 1))  # (T, B, I)
        B = inputs.shape[1]
        h0, c0 = self.initial_h.expand(-1, B, -1), self.initial_c.expand(-1, B, -1)
        output, h_n, c_n = self.recurrent(inputs, lengths, h0, c0)  # (T, B, D*H)
        if self.pooling:
            return self.head(pool(output, lengths, self.pooling, self.directions))  # (B, K)
        y = self.head(output).transpose(0, 1)  # (B, T, O)
        if not self.returns_state:
            return y
        return (y, h_n, c_n) if self.lstm else (y, h_n)


class StepModel(nn.Module):
    """(x_t (B,) ids or (B, F), h_prev[, c_prev] (L, B, H)) -> (y_t (B, O), h[, c])."""

    varargs = True

    def __init__(self, parts: Parts):
        super().__init__()
        self.inputs, self.cells, self.head = Inputs(parts), parts.rnn.cells, parts.head
        self.lstm = isinstance(parts.rnn.cells[0], LSTMCell)

    def forward(self, x: Tensor, *state: Tensor):
        x = self.inputs(x)  # (B, I)
        hs, cs = [], []
        for k, cell in enumerate(self.cells):
            x, new = cell(x, (state[0][k], state[1][k]) if self.lstm else state[0][k])
            hs.append(x)
            cs.append(new[1] if self.lstm else x)
        y = self.head(x)  # (B, O)
        return (y, torch.stack(hs), torch.stack(cs)) if self.lstm else (y, torch.stack(hs))


# --- names, shapes and example inputs ----------------------------------------------------


def _tensor(name: str, dtype: str, shape: list) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


def signature(parts: Parts, step: bool) -> tuple[list[dict], list[dict]]:
    """The named inputs and outputs, with their dtypes and shapes (str: a dynamic axis)."""
    rnn, time = parts.rnn, [] if step else ["T"]
    if parts.embed is not None or parts.one_hot:
        x = _tensor("x", "int64", ["B", *time])
    else:
        x = _tensor("x", "float32", ["B", *time, rnn.input_size])
    lengths = _tensor("lengths", "int64", ["B"])
    y_name = "outputs" if parts.task == "forecast" else "logits"
    if parts.pooling:
        return [x, lengths], [_tensor(y_name, "float32", ["B", parts.head.out_features])]
    y = _tensor(y_name, "float32", ["B", *time, parts.head.out_features])
    names = ("h", "c") if isinstance(rnn.cells[0], LSTMCell) else ("h",)
    shape = [len(rnn.cells), "B", rnn.hidden_size]  # (L*D, B, H)
    if step:
        before = [_tensor(f"{name}_prev", "float32", shape) for name in names]
        return [x, *before], [y, *(_tensor(name, "float32", shape) for name in names)]
    state = [_tensor(f"{name}_n", "float32", shape) for name in names]
    return [x, lengths], [y, *state] if parts.returns_state else [y]


def example(parts: Parts, step: bool, batch: int = 2, steps: int = 3) -> tuple[Tensor, ...]:
    """Inputs of the model's signature: random ids or features, full lengths, zero state."""
    generator = torch.Generator().manual_seed(0)
    inputs, _ = signature(parts, step)
    made = []
    for spec in inputs:
        shape = [{"B": batch, "T": steps}.get(s, s) for s in spec["shape"]]
        if spec["name"] == "lengths":
            made.append(torch.full(shape, steps, dtype=torch.long))
        elif spec["dtype"] == "int64":
            vocab = parts.one_hot or parts.embed.num_embeddings
            made.append(torch.randint(0, vocab, shape, generator=generator))
        elif spec["name"] == "x":
            made.append(torch.randn(shape, generator=generator))
        else:
            made.append(torch.zeros(shape))
    return tuple(made)


def check_step(parts: Parts) -> None:
    if parts.pooling:
        raise ValueError(
            f"a {parts.task} run has no one-step model: it pools over the whole sequence "
            "before its classifier; export the whole-sequence model (without --step)"
        )
    if parts.rnn.bidirectional:
        raise ValueError(
            f"this {parts.task} run is bidirectional and cannot step: its reverse direction "
            "starts at the end of the sequence; export the whole-sequence model (without --step)"
        )
