"""Export of a trained run for other runtimes: ONNX or TorchScript, whole sequence or one step.

    rnnkit export RUN --format onnx|torchscript [--step] [--out DIR]

The whole-sequence model reads a padded batch, batch first, with its lengths, and computes
what the run's model computes with ``lengths`` (the masking rules of :mod:`rnnkit.scan`):
``(x (B, T) ids or (B, T, F) features, lengths (B,))`` -> the task's outputs. Batch and time
are dynamic axes. The one-step model (``--step``, unidirectional stacks with an output per
step) takes and returns the state: ``(x_t, h_prev[, c_prev]) -> (y_t, h[, c])``, the state
stacked layer by layer (L, B, H) as the layers keep it. A JSON sidecar beside each model
names its inputs and outputs, their shapes, and carries the run's config, vocabulary,
classes and scaler.

translate and caption runs write their output by search in Python around an encoder and a
decoder, so they have no whole-sequence model; with ``--step`` they export the encoder side,
``start``, and one decoder step, ``(tokens, state, memory) -> (logits, state, attention)``,
and the search is the caller's.

How the loop over time is exported, with T left dynamic (never unrolled):
- ONNX (torch.onnx's dynamo exporter, opset 18): each layer becomes one of ONNX's own
  ``RNN``/``GRU``/``LSTM`` operators, whose ``sequence_lens`` input applies the same masking
  rules and whose ``P`` input holds the LSTM's peepholes (Gers and Schmidhuber 2000, as
  :class:`rnnkit.cells.LSTMCell`); the GRU with ``linear_before_reset=1``, as torch.nn's.
  In torch the layer is one custom operator, :func:`recurrent_layer`, whose body is the
  reference loop; the exporter swaps it for the ONNX operator.
- TorchScript: the loop of :mod:`rnnkit.scan` written for ``torch.jit.script`` around each
  cell traced from :mod:`rnnkit.cells`, so the gate math is the cells' own.
The one-step model has no loop: it is the cells traced once.

Shape letters: B batch, T time, F features, I input size, H hidden size, L layers,
D directions, G gate blocks, V vocabulary, K classes, O outputs per step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import scan as reference
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.pooling import pool

FORMATS = ("onnx", "torchscript")
OPSET = 18
# What each task keeps beside its weights, copied into the sidecar for the other runtime;
# config.json holds the settings the caller needs too (tokens, max_tokens, beam, horizon).
RUN_FILES = {
    "charlm": ("config.json", "vocab.json"),
    "classify": ("config.json", "vocab.json", "classes.json"),
    "seqclass": ("config.json", "classes.json", "scaler.json"),
    "tag": ("config.json", "labels.json"),
    "forecast": ("config.json", "series.json"),
    "translate": ("config.json", "source_vocab.json", "target_vocab.json"),
    "caption": ("config.json", "vocab.json"),
}
SEQ2SEQ = ("translate", "caption")  # exported as the encoder side and one decoder step


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


# --- encoder-decoders: the encoder and one decoder step; the search is the caller's --------


class LayerCall(nn.Module):
    """An exportable stack behind a layer's own call, ``(x, lengths=...) -> (output, final)``
    from the zero state, so :meth:`rnnkit.seq2seq.Seq2Seq.start` runs unchanged."""

    def __init__(self, rnn: nn.Module, recurrent: nn.Module):
        super().__init__()
        self.recurrent, self.batch_first = recurrent, rnn.batch_first
        self.lstm = isinstance(rnn.cells[0], LSTMCell)
        self.register_buffer("zeros", torch.zeros(len(rnn.cells), 1, rnn.hidden_size))

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, I)
        h0 = self.zeros.expand(-1, x.shape[1], -1)
        output, h_n, c_n = self.recurrent(x, lengths, h0, h0)  # (T, B, D*H)
        output = output.transpose(0, 1) if self.batch_first else output
        return output, (h_n, c_n) if self.lstm else h_n


class Start(nn.Module):
    """The decoder's state before <sos>, flattened: h[, c] (B, L, H), and with attention
    memory (B, S, M), keys (B, S, A) and mask (B, S). translate: (source (B, S), lengths);
    caption: images (B, 3, side, side) or feature rows (B, F)."""

    def __init__(self, task: str, model: nn.Module):
        super().__init__()
        self.task, self.model = task, model
        self.attention = model.decoder.attention is not None

    varargs = True

    def forward(self, x: Tensor, *lengths: Tensor):
        if self.task == "translate":
            state = self.model.start(x, *lengths)
        else:
            state = self.model.start(*self.model.encode(x))
        memory = (state.memory, state.keys, state.mask) if self.attention else ()
        return (*state.hidden, *memory)


class DecoderStep(nn.Module):
    """(tokens (B,), h_prev[, c_prev] (B, L, H)[, memory, keys, mask]) -> (logits (B, V),
    h[, c][, attention weights (B, S)]): :meth:`rnnkit.seq2seq.Decoder.step`."""

    varargs = True

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder, self.attention = decoder, decoder.attention is not None
        self.parts = 2 if isinstance(decoder.rnn.cells[0], LSTMCell) else 1

    def forward(self, tokens: Tensor, *state: Tensor):
        from rnnkit.seq2seq import DecoderState

        hidden, memory = tuple(state[: self.parts]), state[self.parts :]
        step_state = DecoderState(hidden, *(memory if self.attention else (None,) * 3))
        logits, step_state, weights = self.decoder.step(tokens, step_state)
        return (logits, *step_state.hidden, *((weights,) if self.attention else ()))


def seq2seq_models(task: str, model: nn.Module, fmt: str) -> tuple[Start, DecoderStep]:
    """The encoder side and the decoder step of a translate or caption model (a copy). The
    decoder's layers run one step at a time, so they take the reference loop (one step,
    nothing to unroll); the translate encoder runs the exportable stack of ``fmt``."""
    model = copy.deepcopy(model).float().eval().requires_grad_(False)
    model.decoder.rnn.kernel = "loop"
    if task == "translate":
        rnn = model.encoder.rnn
        stack = OperatorStack(rnn) if fmt == "onnx" else torch.jit.script(TimeLoop(rnn).eval())
        model.encoder.rnn = LayerCall(rnn, stack)
    return Start(task, model).eval(), DecoderStep(model.decoder).eval()


def seq2seq_inputs(task: str, model: nn.Module, batch: int = 2, steps: int = 3) -> list:
    """Example inputs of the encoder side, with their names and shapes."""
    generator = torch.Generator().manual_seed(0)
    if task == "translate":
        vocab = model.encoder.embed.num_embeddings
        source = torch.randint(4, vocab, (batch, steps), generator=generator)
        lengths = torch.full((batch,), steps, dtype=torch.long)
        return [(_tensor("source", "int64", ["B", "S"]), source),
                (_tensor("lengths", "int64", ["B"]), lengths)]  # fmt: skip
    encoder = model.encoder
    if encoder is None:
        size = [model.norm.normalized_shape[0]]
        return [(_tensor("features", "float32", ["B", *size]), torch.randn([batch, *size]))]
    size = [3, encoder.image_size, encoder.image_size]
    return [(_tensor("images", "float32", ["B", *size]), torch.rand([batch, *size]))]


def _described(names: list[str], tensors, source_axis: bool) -> list[dict]:
    """Names, dtypes and shapes of example outputs: axis 0 is B, axis 1 of memory, keys,
    mask and weights is S when the source length varies."""
    specs = []
    for name, tensor in zip(names, tensors, strict=True):
        shape = ["B", *tensor.shape[1:]]
        if source_axis and name in ("memory", "keys", "mask", "weights"):
            shape[1] = "S"
        dtype = "bool" if tensor.dtype == torch.bool else str(tensor.dtype).removeprefix("torch.")
        specs.append(_tensor(name, dtype, shape))
    return specs


def export_seq2seq(task: str, model: nn.Module, fmt: str, start_path: Path, step_path: Path):
    """Write the encoder side and the decoder step; return their sidecars' descriptions."""
    if fmt == "onnx":
        _require_onnx()
    with torch.no_grad(), quiet():
        start, step = seq2seq_models(task, model, fmt)
        inputs = seq2seq_inputs(task, model)
        example = tuple(tensor for _, tensor in inputs)
        state = start(*example)
        parts = step.parts
        names = ["h", "c"][:parts] + (["memory", "keys", "mask"] if step.attention else [])
        state_specs = _described(names, state, task == "translate")
        tokens = torch.full((state[0].shape[0],), 1, dtype=torch.long)  # <sos>
        step_out = step(tokens, *state)
        out_names = ["logits", *names[:parts]] + (["weights"] if step.attention else [])
        step_inputs = [
            _tensor("tokens", "int64", ["B"]),
            *({**spec, "name": f"{spec['name']}_prev"} if i < parts else spec
              for i, spec in enumerate(state_specs)),
        ]  # fmt: skip
        step_outputs = _described(out_names, step_out, task == "translate")
        models = (
            (start, example, [spec for spec, _ in inputs], state_specs, start_path),
            (step, (tokens, *state), step_inputs, step_outputs, step_path),
        )
        for module, args, ins, outs, path in models:
            if fmt == "onnx":
                write_onnx(module, args, ins, outs, path)
            else:
                write_torchscript(module, args, path)
    return [
        {"file": path.name, "format": fmt, "model": kind, "inputs": ins, "outputs": outs,
         "opset": OPSET if fmt == "onnx" else None, "batch_first": True,
         "torch": torch.__version__}
        for kind, (_, _, ins, outs, path) in zip(("encoder", "decoder step"), models, strict=True)
    ]  # fmt: skip


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


# --- writing -----------------------------------------------------------------------------


@contextlib.contextmanager
def quiet():
    """Silence what every export says: torch.jit's deprecation, the cells' shape checks read
    as Python booleans under tracing, and the ONNX exporter's notes on torchvision's ops.
    tests/test_export.py checks that the exported models compute what the run computes."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "# The axis name", UserWarning)
        onnx_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_log.setLevel(level)


def write_onnx(model: nn.Module, args: tuple, inputs: list, outputs: list, path: Path) -> None:
    """torch.onnx's dynamo exporter, the recurrent layers as ONNX's own operators."""
    names = {s for spec in inputs for s in spec["shape"] if isinstance(s, str)}
    dims = {name: torch.export.Dim(name) for name in sorted(names)}  # the dynamic axes
    shapes = [{i: dims[s] for i, s in enumerate(spec["shape"]) if s in dims} for spec in inputs]
    if getattr(model, "varargs", False) and len(shapes) > 1:  # forward(x, *state): one argument
        shapes = [shapes[0], tuple(shapes[1:])]
    translations = {torch.ops.rnnkit.recurrent_layer.default: _onnx_recurrent_layer}
    program = torch.onnx.export(
        model, args, dynamo=True, dynamic_shapes=tuple(shapes),
        input_names=[s["name"] for s in inputs], output_names=[s["name"] for s in outputs],
        custom_translation_table=translations, opset_version=OPSET, verbose=False,
    )  # fmt: skip
    program.save(str(path), external_data=False)


def write_torchscript(model: nn.Module, args: tuple, path: Path) -> None:
    torch.jit.trace(model, args, check_trace=False).save(str(path))


def export_model(parts: Parts, fmt: str, step: bool, path: Path) -> dict:
    """Write one model (whole sequence, or with ``step`` one step) to ``path``; return the
    sidecar's description of it."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx()
    if step:
        check_step(parts)
    parts = copy.deepcopy(parts)  # the exported weights are constants: no gradients
    for module in (parts.rnn, parts.head, parts.embed):
        if module is not None:
            module.requires_grad_(False)
    inputs, outputs = signature(parts, step)
    args = example(parts, step)
    with torch.no_grad(), quiet():
        if step:
            model = StepModel(parts).eval()
        elif fmt == "onnx":
            model = SequenceModel(parts, OperatorStack(parts.rnn)).eval()
        else:
            loop = torch.jit.script(TimeLoop(parts.rnn).eval())
            model = SequenceModel(parts, loop).eval()
        if fmt == "onnx":
            write_onnx(model, args, inputs, outputs, path)
        else:
            write_torchscript(model, args, path)
    rnn = parts.rnn
    return {
        "file": path.name,
        "format": fmt,
        "model": "step" if step else "sequence",
        "opset": OPSET if fmt == "onnx" else None,
        "inputs": inputs,
        "outputs": outputs,
        "cell": kind_of(rnn.cells[0]),
        "layers": rnn.num_layers,
        "hidden": rnn.hidden_size,
        "directions": rnn.num_directions,
        "pooling": parts.pooling or None,
        "batch_first": True,
        "torch": torch.__version__,
    }


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages ({err.name} is missing): "
            "pip install 'rnnkit[export]'"
        ) from None


def load_run(run_dir: Path, module) -> tuple[nn.Module, dict]:
    """A run's model (on the CPU, float32, eval) and its files for the sidecar (vocabularies,
    classes, scaler)."""
    *_, model = module.load_run(run_dir, "cpu")
    files = {name: json.loads((run_dir / name).read_text()) for name in RUN_FILES[module.NAME]}
    if module.NAME == "caption" and model.encoder is not None:
        from rnnkit.vision import MEAN, SPREAD

        # Images as rnnkit.vision.to_tensor reads them: RGB resized to a square (as
        # rnnkit.data.images.load_image), (B, 3, side, side), (pixel / 255 - mean) / spread.
        files["pixels"] = {"side": model.encoder.image_size, "mean": MEAN, "spread": SPREAD}
    return model.float().eval(), files


def export_run(run_dir, fmt: str = "onnx", step: bool = False, out=None) -> list[Path]:
    """Write a run's whole-sequence model (and with ``step`` its one-step model), each with
    a JSON sidecar, into ``out`` (default RUN/export); return the paths written. A translate
    or caption run, with ``step``, writes its encoder side and its decoder step instead.

    Everything is written into a temporary directory first and moved into place only when
    every export has succeeded, so an error leaves the run directory as it was.
    """
    from rnnkit.tasks import task_of_run

    run_dir = Path(run_dir)
    module = task_of_run(run_dir)
    task = module.NAME
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if task not in RUN_FILES:
        raise ValueError(
            f"a {task} run cannot be exported yet; rnnkit export knows {sorted(RUN_FILES)}"
        )
    if task in SEQ2SEQ and not step:
        raise refusal(task)
    model, files = load_run(run_dir, module)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    if task in SEQ2SEQ:
        names = ("encoder", "step")
    else:
        parts = parts_of(task, model)
        if step:
            check_step(parts)
        names = ("model", "step") if step else ("model",)
    out = Path(out) if out else run_dir / "export"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        paths = [Path(tmp) / f"{name}{suffix}" for name in names]
        if task in SEQ2SEQ:
            sidecars = export_seq2seq(task, model, fmt, *paths)
        else:
            sidecars = [
                export_model(parts, fmt, name == "step", path)
                for name, path in zip(names, paths, strict=True)
            ]
        for name, sidecar in zip(names, sidecars, strict=True):
            sidecar.update(task=task, run=str(run_dir), **files)
            text = json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n"
            (Path(tmp) / f"{name}.json").write_text(text)
        written = [f"{name}{end}" for name in names for end in (suffix, ".json")]
        out.mkdir(exist_ok=True)
        for name in written:
            shutil.move(Path(tmp) / name, out / name)
    return [out / name for name in written]
