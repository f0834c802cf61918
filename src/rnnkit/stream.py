"""Streaming inference: a recurrent stack fed one input at a time, at microsecond latency.

    stream = rnnkit.Stream(layer, embedding=embed, head=linear)   # batch 1 by default
    stream.feed(prompt_ids)          # the prompt, step by step; returns the last output
    logits = stream.step(next_id)    # (1, V), valid until the next step
    saved = stream.state             # (L, 1, H), or (h, c) for an LSTM, like the layer's
    stream.state = saved             # copy a state in, e.g. to sample twice from one prompt
    stream.reset()                   # back to the layer's initial state

Every output equals the full-sequence forward of ``head(layer(embedding(x)))`` in eval
mode (dropout off). Only unidirectional stacks can stream: a reverse direction starts at
the end of the sequence.

Two paths compute each step. The fast one (``stream.compiled``) is one call into the C
code of :mod:`rnnkit.kernels.step_c`: float32 weights snapshot when the stream is made,
the embedding already multiplied through the first layer's W_ih (a table of input
projections, one row per token, unless it would pass ``TABLE_LIMIT`` bytes), the state
in preallocated buffers, no allocation and no Python work per layer. The slow twin
steps the cells of :mod:`rnnkit.cells` with torch, on the live weights; it runs
wherever the C code cannot (no compiler, another dtype or device) and
``compiled=False`` asks for it. ``tests/test_stream.py`` checks both against the layer
and against each other.

The fast path snapshots the weights: after changing them, make a new stream.

Shape letters: B batch, I input size, H hidden size, L layers, G gate blocks, V vocabulary
(embedding rows), O head outputs.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from rnnkit.cells import GRUCell, LSTMCell
from rnnkit.kernels import step_c
from rnnkit.layers import RecurrentLayer

# Bytes up to which the first layer's input projections are tabulated per token (a
# character vocabulary needs a few MB; a word vocabulary of 50k at H=512 would need 400).
TABLE_LIMIT = 64 * 2**20


class Stream:
    """Holds the state of ``layer`` and advances it one input at a time.

    ``embedding`` (an ``nn.Embedding`` or a (V, I) table; ``torch.eye(V)`` for one-hot
    inputs) makes inputs token ids; without it inputs are vectors (I,) or (B, I).
    ``head`` (an ``nn.Linear``) maps the top layer's h to the output; without it the
    output is that h. ``compiled=None`` uses the C step when it can be built, ``False``
    always steps the torch cells.
    """

    def __init__(self, layer, embedding=None, head=None, batch: int = 1, compiled=None):
        _check_layer(layer)
        self.layer, self.batch = layer, _check_batch(batch)
        self.embedding = _embedding_table(embedding, layer.input_size)
        if head is not None and not (
            isinstance(head, nn.Linear) and head.in_features == layer.hidden_size
        ):
            raise ValueError(
                f"head must be an nn.Linear with in_features={layer.hidden_size}, got {head!r}"
            )
        self.head = head
        self.lstm = isinstance(layer.cells[0], LSTMCell)
        weight = layer.cells[0].weight_hh
        shape = (layer.num_layers, batch, layer.hidden_size)
        self._h = torch.zeros(shape, dtype=weight.dtype, device=weight.device)  # (L, B, H)
        self._c = torch.zeros_like(self._h) if self.lstm else None  # (L, B, H)
        fast = weight.dtype == torch.float32 and weight.device.type == "cpu"
        self._run = step_c.library() if compiled is not False and fast else None
        if compiled and self._run is None:
            raise RuntimeError("compiled=True, but the C step is unavailable for this stream")
        self.compiled = self._run is not None
        if self.compiled:
            self._prepare_compiled()
        else:
            size = head.out_features if head is not None else layer.hidden_size
            self.output = self._h.new_zeros(batch, size)  # (B, O)
        self.reset()

    # -- state -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the layer's initial state: zeros, or its learned s_0 with ``learn_init``."""
        with torch.no_grad():
            if self.layer.learn_init:
                self.state = tuple(p.expand(-1, self.batch, -1) for p in self.layer.initial_state)
            else:
                self._h.zero_()
                if self.lstm:
                    self._c.zero_()

    @property
    def state(self):
        """A copy of the state in the layer's format: h (L, B, H), or (h, c) for an LSTM."""
        return (self._h.clone(), self._c.clone()) if self.lstm else self._h.clone()

    @state.setter
    def state(self, state) -> None:
        parts = state if isinstance(state, tuple) else (state,)
        buffers = (self._h, self._c) if self.lstm else (self._h,)
        if len(parts) != len(buffers):
            raise ValueError(f"expected a state of {len(buffers)} tensor(s), got {len(parts)}")
        for buffer, part in zip(buffers, parts, strict=True):
            if not isinstance(part, Tensor) or part.shape != buffer.shape:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(f"expected a state of shape {tuple(buffer.shape)}, got {got}")
        with torch.no_grad():
            for buffer, part in zip(buffers, parts, strict=True):
                buffer.copy_(part)

    # -- stepping --------------------------------------------------------------------------

    def step(self, x) -> Tensor:
        """Advance one step; return the output (B, O), or (B, H) without a head.

        ``x`` is a token id (batch 1) or B of them with an embedding, else a vector (I,) or
        (B, I). The returned tensor is the stream's output buffer, overwritten by the next
        step: ``.clone()`` it to keep it.
        """
        if self.compiled:
            # The fast paths of the common cases, one call each and nothing allocated: one
            # token, or a float32 vector already laid out as the C step reads it.
            if type(x) is int and self._vocab and self.batch == 1:
                if not 0 <= x < self._vocab:
                    raise IndexError(f"token {x} is outside the embedding's {self._vocab} rows")
                self._tokens[0] = x
                self._run(self._stack_address, None)
                return self.output
            if (
                type(x) is Tensor
                and not self._vocab
                and x.is_cpu
                and x.dtype is torch.float32
                and x.shape in self._vector_shapes
                and x.is_contiguous()
            ):
                self._run(self._stack_address, x.data_ptr())
                return self.output
        x = self._check_input(x)
        if self.compiled:
            return self._step_compiled(x)
        with torch.no_grad():
            return self._step_cells(x)

    def feed(self, inputs) -> Tensor:
        """Step through a sequence: token ids (T,) or (T, B), or vectors (T, I) or (T, B, I).

        Returns the output of the last step (the stream's buffer, as :meth:`step` does).
        """
        if len(inputs) == 0:
            raise ValueError("feed needs at least one step")
        for x in inputs:
            output = self.step(x.item() if isinstance(x, Tensor) and x.dim() == 0 else x)
        return output

    def _check_input(self, x) -> Tensor:
        if self.embedding is not None:
            tokens = torch.as_tensor(x, dtype=torch.long).reshape(-1)  # (B,)
            if tokens.shape[0] != self.batch:
                raise ValueError(f"expected {self.batch} token id(s), got {tokens.shape[0]}")
            if tokens.min() < 0 or tokens.max() >= self.embedding.shape[0]:
                raise IndexError(
                    f"a token is outside the embedding's {self.embedding.shape[0]} rows"
                )
            return tokens
        x = torch.as_tensor(x, dtype=self._h.dtype, device=self._h.device)
        x = x.unsqueeze(0) if x.dim() == 1 else x
        if x.shape != (self.batch, self.layer.input_size):
            raise ValueError(
                f"expected an input of shape ({self.layer.input_size},) or "
                f"({self.batch}, {self.layer.input_size}), got {tuple(x.shape)}"
            )
        return x.contiguous()

    def _step_cells(self, x: Tensor) -> Tensor:
        """The slow twin: the cells of each layer stepped with torch, state copied back."""
        if self.embedding is not None:
            x = self.embedding[x.to(self.embedding.device)]  # (B, I)
        for k, cell in enumerate(self.layer.cells):
            state = (self._h[k], self._c[k]) if self.lstm else self._h[k]
            x, state = cell(x, state)  # (B, H)
            self._h[k].copy_(x)
            if self.lstm:
                self._c[k].copy_(state[1])
        self.output.copy_(self.head(x) if self.head is not None else x)
        return self.output

    # -- the compiled path -----------------------------------------------------------------

    def _step_compiled(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            self._tokens[:] = x.tolist()
            self._run(self._stack_address, None)
        else:
            self._run(self._stack_address, x.data_ptr())
        return self.output

    def _prepare_compiled(self) -> None:
        """Lay the weights out for step.c and point a ``Stack`` at them and at the buffers."""
        layer, B, H = self.layer, self.batch, self.layer.hidden_size
        rows = layer.cells[0].gates * H  # G*H
        self._weights = weights = _compiled_weights(layer.cells, self.embedding, self.head)
        out_size = self.head.out_features if self.head is not None else H
        self._gx = torch.zeros(B, step_c.padded_size(rows))  # (B, N)
        self._gh = torch.zeros_like(self._gx)  # (B, N)
        self._out = torch.zeros(B, step_c.padded_size(out_size)) if self.head is not None else None
        # The output (B, O) is a view of the padded head buffer, or the top layer's h.
        self.output = self._out[:, :out_size] if self.head is not None else self._h[-1]
        self._tokens = (ctypes.c_int64 * B)()
        table, embedding = weights["table"], weights["embedding"]
        self._vocab = 0 if embedding is None else embedding.shape[0]
        inputs = layer.input_size
        self._vector_shapes = {(inputs,), (B, inputs)} if B == 1 else {(B, inputs)}
        per_layer = ("w_ih", "w_hh", "b_ih", "b_hh", "peep")
        self._arrays = [step_c.pointer_array(weights[name]) for name in per_layer]
        self._stack = step_c.Stack(
            step_c.KINDS[_kind(layer.cells[0])], layer.num_layers, B, inputs, H, rows,
            out_size if self.head is not None else 0, 0, self._vocab,
            step_c.pointer(table), step_c.pointer(embedding),
            *(ctypes.cast(array, ctypes.c_void_p) for array in self._arrays),
            step_c.pointer(weights["head_w"]), step_c.pointer(weights["head_b"]),
            self._h.data_ptr(), step_c.pointer(self._c), self._gx.data_ptr(),
            self._gh.data_ptr(), step_c.pointer(self._out), ctypes.addressof(self._tokens),
        )  # fmt: skip
        self._stack_address = ctypes.addressof(self._stack)


@torch.no_grad()
def _compiled_weights(cells, embedding: Tensor | None, head) -> dict:
    """Float32 copies of every weight in step.c's layout (the stream keeps them alive)."""
    rows = cells[0].gates * cells[0].hidden_size  # G*H
    weights = {
        "table": None,
        "embedding": None,
        "w_ih": [step_c.panels(c.weight_ih) for c in cells],
        "w_hh": [step_c.panels(c.weight_hh) for c in cells],
        "b_ih": [step_c.padded_vector(c.bias_ih, rows) for c in cells],
        "b_hh": [step_c.padded_vector(c.bias_hh, rows) for c in cells],
        "peep": [_peepholes(c) for c in cells],
        "head_w": None if head is None else step_c.panels(head.weight),
        "head_b": None if head is None else step_c.padded_vector(head.bias, head.out_features),
    }
    if embedding is not None:
        # Row v is W_ih e_v + b_ih: the first layer's input projection of token v.
        first = cells[0]
        weights["embedding"] = embedding.float().contiguous()  # (V, I)
        if embedding.shape[0] * first.weight_ih.shape[0] * 4 <= TABLE_LIMIT:
            table = nn.functional.linear(embedding.float(), first.weight_ih, first.bias_ih)
            weights["table"] = table.contiguous()  # (V, G*H)
    return weights


def _kind(cell) -> str:
    if isinstance(cell, LSTMCell):
        return "lstm"
    return "gru" if isinstance(cell, GRUCell) else f"rnn_{cell.nonlinearity}"


def _peepholes(cell) -> Tensor:
    """(3H) p_i, p_f, p_o for step.c: zeros for cells without peepholes."""
    if isinstance(cell, LSTMCell) and cell.peephole:
        return torch.cat([cell.weight_ci, cell.weight_cf, cell.weight_co]).detach().float()
    return torch.zeros(3 * cell.hidden_size)


def _check_layer(layer) -> None:
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(f"Stream expects an rnnkit RNN, LSTM or GRU, got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError(
            "Stream cannot run a bidirectional layer: its reverse direction starts at the end "
            "of the sequence, which a stream has not seen yet"
        )


def _check_batch(batch) -> int:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return batch


def _embedding_table(embedding, input_size: int) -> Tensor | None:
    """The (V, I) embedding weight, from an nn.Embedding or a tensor; None without one."""
    if embedding is None:
        return None
    table = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(table, Tensor) or table.dim() != 2 or table.shape[1] != input_size:
        got = tuple(table.shape) if isinstance(table, Tensor) else type(embedding).__name__
        raise ValueError(
            f"embedding must be an nn.Embedding or a (V, {input_size}) tensor, got {got}"
        )
    return table.detach()
