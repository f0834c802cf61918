"""The recurrent layers as the exports run them, the loop over time with T left dynamic
(never unrolled):
- ONNX (torch.onnx's dynamo exporter, opset 18): each layer becomes one of ONNX's own
  ``RNN``/``GRU``/``LSTM`` operators, whose ``sequence_lens`` input applies the same masking
  rules and whose ``P`` input holds the LSTM's peepholes (Gers and Schmidhuber 2000, as
  :class:`rnnkit.cells.LSTMCell`); the GRU with ``linear_before_reset=1``, as torch.nn's.
  In torch the layer is one custom operator, :func:`recurrent_layer`, whose body is the
  reference loop; the exporter swaps it for the ONNX operator.
- TorchScript: the loop of :mod:`rnnkit.scan` written for ``torch.jit.script`` around each
  cell traced from :mod:`rnnkit.cells`, so the gate math is the cells' own.
The one-step model (:class:`rnnkit.export.models.StepModel`) has no loop: it is the cells
traced once.

Shape letters as in :mod:`rnnkit.export`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit import scan as reference
from rnnkit.cells import GRUCell, LSTMCell, RNNCell


def kind_of(cell) -> str:
    """The cell as ONNX names its operator: lstm, peephole, gru, rnn_tanh or rnn_relu."""
    if isinstance(cell, LSTMCell):
        return "peephole" if cell.peephole else "lstm"
    if isinstance(cell, GRUCell):
        return "gru"
    return f"rnn_{cell.nonlinearity}"


def _make_cell(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    if kind in ("lstm", "peephole"):
        return LSTMCell(input_size, hidden_size, peephole=kind == "peephole")
    if kind == "gru":
        return GRUCell(input_size, hidden_size)
    return RNNCell(input_size, hidden_size, nonlinearity=kind.removeprefix("rnn_"))


# --- one layer as one operator (the ONNX path) ---------------------------------------------


# ONNX orders the gate blocks differently from torch.nn (the ONNX operator specifications):
# LSTM i, o, f, c (torch i, f, g, o) and peepholes i, o, f; GRU z, r, h (torch r, z, n).
ONNX_ORDER = {"lstm": (0, 3, 1, 2), "peephole": (0, 3, 1, 2), "gru": (1, 0, 2)}


def reorder(weight: Tensor, order) -> Tensor:
    """The gate blocks of ``weight``'s axis 1 (D, G*H, ...) in ``order``."""
    blocks = weight.chunk(len(order), 1)
    return torch.cat([blocks[i] for i in order], 1)


def unorder(weight: Tensor, order) -> Tensor:
    """The inverse of :func:`reorder`."""
    return reorder(weight, sorted(range(len(order)), key=order.__getitem__))


@torch.library.custom_op("rnnkit::recurrent_layer", mutates_args=())
def recurrent_layer(
    x: Tensor,
    lengths: Tensor,
    h0: Tensor,
    c0: Tensor,
    W: Tensor,
    R: Tensor,
    B: Tensor,
    P: Tensor,
    kind: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """ONNX's RNN, GRU or LSTM operator with its inputs named as ONNX names them, in torch.

    One layer in D directions: x (T, B, I), h0 and c0 (D, B, H) -> (output (T, B, D*H),
    h_n, c_n (D, B, H)); W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) the input and recurrent
    biases, P (D, 3H) the peepholes, gate blocks in ONNX's order. The body turns them back
    into a cell and runs the reference loop of :mod:`rnnkit.scan`; ``c_n`` is ``c0`` for
    cells without a cell state.
    """
    order = ONNX_ORDER.get(kind, (0,))
    mask = torch.arange(x.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B)
    weights = {
        "weight_ih": unorder(W, order),
        "weight_hh": unorder(R, order),
        "bias_ih": unorder(B.chunk(2, 1)[0], order),
        "bias_hh": unorder(B.chunk(2, 1)[1], order),
    }
    if kind == "peephole":
        weights |= dict(zip(("weight_ci", "weight_co", "weight_cf"), P.chunk(3, 1), strict=True))
    outputs, finals_h, finals_c = [], [], []
    for d in range(h0.shape[0]):
        cell = _make_cell(kind, x.shape[2], h0.shape[2])
        with torch.no_grad():
            for name, weight in weights.items():
                getattr(cell, name).copy_(weight[d])
            state = (h0[d], c0[d]) if isinstance(cell, LSTMCell) else h0[d]
            output, final = reference.scan(cell, x, state, mask, reverse=d == 1)
        h, c = final if isinstance(final, tuple) else (final, c0[d])
        outputs.append(output), finals_h.append(h), finals_c.append(c)
    return torch.cat(outputs, 2), torch.stack(finals_h), torch.stack(finals_c)


@recurrent_layer.register_fake
def _(x, lengths, h0, c0, W, R, B, P, kind):
    T, batch, D, H = x.shape[0], x.shape[1], h0.shape[0], h0.shape[2]
    return x.new_empty(T, batch, D * H), h0.new_empty(D, batch, H), c0.new_empty(D, batch, H)


def _onnx_recurrent_layer(x, lengths, h0, c0, W, R, B, P, kind):
    """:func:`recurrent_layer` as the ONNX operator itself; Y comes out (T, D, B, H)."""
    from onnxscript import opset18 as op

    D, H = h0.shape[0], h0.shape[2]
    direction = "bidirectional" if D == 2 else "forward"
    sequence_lens = op.Cast(lengths, to=6)  # int32
    if kind in ("lstm", "peephole"):
        y, h_n, c_n = op.LSTM(x, W, R, B, sequence_lens, h0, c0, P, hidden_size=H,
                              direction=direction)  # fmt: skip
    elif kind == "gru":
        y, h_n = op.GRU(x, W, R, B, sequence_lens, h0, hidden_size=H, direction=direction,
                        linear_before_reset=1)  # fmt: skip
        c_n = op.Identity(c0)
    else:
        activation = "Tanh" if kind == "rnn_tanh" else "Relu"
        y, h_n = op.RNN(x, W, R, B, sequence_lens, h0, hidden_size=H, direction=direction,
                        activations=[activation] * D)  # fmt: skip
        c_n = op.Identity(c0)
    y = op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))
    return y, h_n, c_n


class OperatorStack(nn.Module):
    """The stack as one :func:`recurrent_layer` per layer; ONNX runs its own operators."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.kind, self.num_layers = kind_of(rnn.cells[0]), rnn.num_layers
        self.num_directions = rnn.num_directions
        D = self.num_directions
        for layer in range(rnn.num_layers):
            cells = rnn.cells[layer * D : (layer + 1) * D]
            for name, weights in self._weights(cells).items():
                self.register_buffer(f"{name}_l{layer}", weights.clone())

    @staticmethod
    def _weights(cells) -> dict:
        """ONNX's W, R, B, P of one layer's cells (one per direction)."""

        def of(name, size):  # stacked by direction; zeros for what a cell does not have
            found = [getattr(c, name, None) for c in cells]
            return torch.stack([torch.zeros(size) if w is None else w.detach() for w in found])

        G, H = cells[0].gates, cells[0].hidden_size
        order = ONNX_ORDER.get(kind_of(cells[0]), (0,))
        biases = (reorder(of("bias_ih", G * H), order), reorder(of("bias_hh", G * H), order))
        return {
            "W": reorder(of("weight_ih", 0), order),  # (D, G*H, I)
            "R": reorder(of("weight_hh", 0), order),  # (D, G*H, H)
            "B": torch.cat(biases, 1),  # (D, 2*G*H)
            "P": torch.cat([of(f"weight_c{gate}", H) for gate in "iof"], 1),  # (D, 3H)
        }

    def forward(self, x, lengths, h0, c0):
        """x (T, B, I) -> (output (T, B, D*H), h_n, c_n (L*D, B, H))."""
        D, finals_h, finals_c = self.num_directions, [], []
        for layer in range(self.num_layers):
            weights = [getattr(self, f"{name}_l{layer}") for name in "WRBP"]
            part = slice(layer * D, (layer + 1) * D)
            x, h, c = recurrent_layer(x, lengths, h0[part], c0[part], *weights, self.kind)
            finals_h.append(h), finals_c.append(c)
        return x, torch.cat(finals_h), torch.cat(finals_c)


# --- the loop for TorchScript ------------------------------------------------------------


class CellStep(nn.Module):
    """One cell with a fixed signature for tracing: (x_t, h, c) -> (h, c); c passes through
    cells without a cell state."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell, self.lstm = cell, isinstance(cell, LSTMCell)

    def forward(self, x_t, h, c):
        if self.lstm:
            _, (h, c) = self.cell(x_t, (h, c))
            return h, c
        return self.cell(x_t, h)[0], c


class TimeLoop(nn.Module):
    """:func:`rnnkit.scan.scan` over every layer and direction, written for torch.jit.script
    (each cell a traced :class:`CellStep`), so TorchScript keeps T dynamic."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.num_directions = rnn.num_directions
        steps = []
        for cell in rnn.cells:
            example = (torch.zeros(2, cell.input_size), *[torch.zeros(2, cell.hidden_size)] * 2)
            steps.append(torch.jit.trace(CellStep(cell), example))
        self.steps = nn.ModuleList(steps)

    def forward(self, x: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor):
        """x (T, B, I) -> (output (T, B, D*H), h_n, c_n (L*D, B, H))."""
        T = x.size(0)
        mask = torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)
        mask = mask.unsqueeze(2)  # (T, B, 1)
        finals_h: list[Tensor] = []
        finals_c: list[Tensor] = []
        directions: list[Tensor] = []
        layer_input = x
        k = 0
        for step in self.steps:
            reverse = k % self.num_directions == 1
            h, c = h0[k], c0[k]
            outputs: list[Tensor] = []
            for i in range(T):
                t = T - 1 - i if reverse else i
                h_new, c_new = step(layer_input[t], h, c)
                # A padded step keeps the state and outputs zero (scan.py's rules).
                h, c = torch.where(mask[t], h_new, h), torch.where(mask[t], c_new, c)
                outputs.append(h_new.masked_fill(~mask[t], 0.0))
            output = torch.stack(outputs)  # (T, B, H)
            directions.append(output.flip(0) if reverse else output)
            finals_h.append(h)
            finals_c.append(c)
            if len(directions) == self.num_directions:
                layer_input = torch.cat(directions, 2)  # (T, B, D*H)
                directions = []
            k += 1
        return layer_input, torch.stack(finals_h), torch.stack(finals_c)
