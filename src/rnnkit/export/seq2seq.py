"""Encoder-decoders (translate, caption): their output is written by greedy or beam search
in Python, so they export the encoder side, ``start``, and one decoder step,
``(tokens, state, memory) -> (logits, state, attention)``; the search is the caller's.

Shape letters as in :mod:`rnnkit.export`; S source positions, M memory size,
A attention size.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.cells import LSTMCell
from rnnkit.export.layers import OperatorStack, TimeLoop
from rnnkit.export.models import _tensor
from rnnkit.export.write import OPSET, _require_onnx, quiet, write_onnx, write_torchscript


class LayerCall(nn.Module):
    """An exportable stack behind a layer's own call, ``(x, lengths=...) -> (output, final)``
    from the zero state, so :meth:`rnnkit.models.seq2seq.Seq2Seq.start` runs unchanged."""

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
    h[, c][, attention weights (B, S)]): :meth:`rnnkit.models.seq2seq.Decoder.step`."""

    varargs = True

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder, self.attention = decoder, decoder.attention is not None
        self.parts = 2 if isinstance(decoder.rnn.cells[0], LSTMCell) else 1

    def forward(self, tokens: Tensor, *state: Tensor):
        from rnnkit.models.seq2seq import DecoderState

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
