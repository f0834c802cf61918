"""Recurrent layers: cells unrolled over time, stacked, in one or two directions.

``layer(x, state=None, lengths=None) -> (output, final_state)`` with torch.nn's shapes:
x is (T, B, I), or (B, T, I) with ``batch_first``; output is (T, B, D*H) likewise; the
state is h of shape (L*D, B, H), or the pair (h, c) for an LSTM, indexed layer by layer,
forward direction before reverse.

Variable-length batches (padding and masking), by ``lengths`` (B,) or a PackedSequence:
- a padded step leaves the state unchanged, and its output is exactly zero;
- the final state is the one at each sequence's last real step;
- the reverse direction of a bidirectional layer starts at each sequence's own last real
  step, from the initial state;
- with dropout between layers, padded outputs stay zero.
A PackedSequence in gives a PackedSequence out, as in torch.nn.

Truncated BPTT: pass the final state of one window as the next window's ``state``, cut by
:func:`detach_state`; two windows then give the same outputs as one run.

Kernels (``kernel=``): ``"loop"`` is autograd over the Python loop in :mod:`rnnkit.scan`
(the readable reference); ``"bptt"`` is the hand-written backpropagation through time of
:mod:`rnnkit.kernels`; ``"fused"`` is that BPTT with the gate math of each step in one pass
of C (:mod:`rnnkit.kernels.lstm_fused`, ``gru_fused``, ``rnn_fused``); ``"torch"`` runs
torch's fused kernel (standard cells only). ``"auto"`` picks ``"fused"`` or ``"torch"`` by
timing both on the machine at hand the first time a case is met (cell, sizes, lengths,
precision, whether the call records a graph), :mod:`rnnkit.kernels.autotune`.

Precision: ``"fp32"`` computes in the layer's dtype. ``"bf16"`` (float32 layers) keeps
float32 weights, outputs and states and runs the matrix products in bfloat16: on
``"fused"`` the cell state and gate math stay float32; ``"torch"`` runs under autocast,
with torch's own bfloat16 state. An enclosing bfloat16 autocast makes ``"fused"`` bf16.

Shape letters: T time, B batch, I input size, H hidden size, L layers, D directions.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit import convert
from rnnkit import scan as reference
from rnnkit.cells import GRUCell, LSTMCell, RNNCell, State
from rnnkit.kernels import autotune, bptt_scan, fused_scan, torch_fused
from rnnkit.kernels.dropout import dropout

KERNELS = ("auto", "loop", "bptt", "torch", "fused")
PRECISIONS = ("fp32", "bf16")


def detach_state(state):
    """Cut the graph between truncated-BPTT windows; the values carry on unchanged."""
    if state is None:
        return None
    return reference.map_state(lambda s: s.detach(), state)


def _check_options(num_layers, dropout, kernel: str, precision: str) -> None:
    """What the layer's own arguments must be (the cell checks its sizes)."""
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and kernel in ("loop", "bptt"):
        raise ValueError(
            f"precision='bf16' needs kernel fused/torch/auto; {kernel!r} is a float reference"
        )


class RecurrentLayer(nn.Module):
    """The loop over time shared by every cell: stacking, directions, lengths and state."""

    cell_type: type = RNNCell
    torch_type: type = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        learn_init: bool = False,
        kernel: str = "auto",
        precision: str = "fp32",
        **cell_options,
    ):
        super().__init__()
        _check_options(num_layers, dropout, kernel, precision)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.learn_init, self.kernel = bidirectional, learn_init, kernel
        self.precision = precision
        self.num_directions = 2 if bidirectional else 1
        self.cells = self._stack_cells(cell_options)
        if kernel == "torch" and not torch_fused.supports(self.cells[0]):
            raise ValueError(f"kernel='torch' has no fused kernel for {self.cells[0]!r}")
        self.initial_state = self._learned_state() if learn_init else nn.ParameterList()

    def _stack_cells(self, cell_options: dict) -> nn.ModuleList:
        """One cell per layer and direction, ``cells[layer * D + direction]``; layer 0 reads
        the input, each layer above the D directions' outputs of the one below."""
        D, H = self.num_directions, self.hidden_size
        return nn.ModuleList(
            self.cell_type(self.input_size if layer == 0 else D * H, H, self.bias, **cell_options)
            for layer in range(self.num_layers)
            for _ in range(D)
        )

    # -- state ---------------------------------------------------------------------------

    def _learned_state(self) -> nn.ParameterList:
        """A learnable s_0, shared by every sequence of the batch; starts at zero. One
        (L*D, 1, H) parameter per part of the state: h, or h and c."""
        parts = len(self._zero_state(1, torch.device("cpu"), torch.float32))
        shape = (len(self.cells), 1, self.hidden_size)
        return nn.ParameterList(nn.Parameter(torch.zeros(shape)) for _ in range(parts))

    def _zero_state(self, batch, device, dtype) -> tuple[Tensor, ...]:
        """The zero state as a tuple of (L*D, B, H) tensors (one for h, two for (h, c))."""
        if not hasattr(self, "_state_parts"):  # the cell's own zero state says how many
            parts = self.cells[0].init_state(1)
            self._state_parts = len(parts) if isinstance(parts, tuple) else 1
        shape = (len(self.cells), batch, self.hidden_size)
        return tuple(
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(self._state_parts)
        )

    def _initial_state(self, state, batch, x: Tensor) -> tuple[Tensor, ...]:
        if state is None:
            if self.learn_init:
                return tuple(p.expand(-1, batch, -1).to(x.dtype) for p in self.initial_state)
            return self._zero_state(batch, x.device, x.dtype)
        parts = state if isinstance(state, tuple) else (state,)
        expected = len(self._zero_state(1, x.device, x.dtype))
        shape = (len(self.cells), batch, self.hidden_size)
        if len(parts) != expected:
            raise ValueError(
                f"{type(self).__name__} expected a state of {expected} tensor(s), got {len(parts)}"
            )
        for p in parts:
            if not isinstance(p, Tensor) or tuple(p.shape) != shape:
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(
                    f"{type(self).__name__} expected state of shape {shape}, got {got}"
                )
            if p.dtype != x.dtype:
                raise ValueError(f"state dtype {p.dtype} does not match input dtype {x.dtype}")
        return parts

    @staticmethod
    def _pack_state(parts: tuple[Tensor, ...]) -> State:
        return parts if len(parts) == 2 else parts[0]

    # -- checks --------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            got = f"rank {x.dim()}" if isinstance(x, Tensor) else type(x).__name__
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(f"{type(self).__name__} expected a rank-3 input {layout}, got {got}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expected a floating-point input, got {x.dtype}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expected input_size {self.input_size} in the last "
                f"dimension, got {x.shape[-1]}"
            )

    @staticmethod
    def _check_lengths(lengths, T: int, B: int) -> Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(
                f"lengths must be 1-D with one entry per sequence ({B}), "
                f"got shape {tuple(lengths.shape)}"
            )
        if lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be integers, got {lengths.dtype}")
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(
                f"lengths must lie in [1, {T}] (the time dimension), got "
                f"min {int(lengths.min())}, max {int(lengths.max())}"
            )
        return lengths

    # -- forward -------------------------------------------------------------------------

    def forward(self, x, state=None, lengths=None):
        """Run the stack over x; return (output, final_state). See the module docstring."""
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("give lengths or a PackedSequence, not both")
            x, lengths = pad_packed_sequence(x, batch_first=self.batch_first)
        self._check_input(x)
        if self.precision == "bf16" and x.dtype != torch.float32:
            raise TypeError(f"precision='bf16' expects a float32 input, got {x.dtype}")
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B)
        parts = self._initial_state(state, B, x)
        output, final = self._run(x, parts, lengths)
        if self.batch_first:
            output = output.transpose(0, 1)
        if packed:
            output = pack_padded_sequence(
                output, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False
            )
        return output, self._pack_state(final)

    def _kernel_name(self, lengths, batch: int, grad: bool = True) -> str:
        """The kernel this call runs: the one named, or auto's (:mod:`rnnkit.kernels.autotune`)."""
        return autotune.kernel_for(self, lengths is not None, batch, grad)

    def _records_graph(self, x: Tensor) -> bool:
        """Whether this call builds a graph for backward (False: inference)."""
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    def _low_precision(self, x: Tensor) -> bool:
        """bf16 matmuls: asked for, or an enclosing bfloat16 autocast on x's device."""
        enclosing = torch.is_autocast_enabled(x.device.type) and (
            torch.get_autocast_dtype(x.device.type) == torch.bfloat16
        )
        return self.precision == "bf16" or enclosing

    def _run(self, x, parts, lengths):
        grad = self.kernel != "auto" or self._records_graph(x)  # only auto asks
        kernel = self._kernel_name(lengths, x.shape[1], grad)
        if kernel == "torch":
            return self._run_torch(x, parts, lengths)
        scan = {"loop": reference.scan, "bptt": bptt_scan}.get(kernel)
        if kernel == "fused":
            scan = functools.partial(fused_scan, low_precision=self._low_precision(x))
        mask = None
        if lengths is not None:
            steps = torch.arange(x.shape[0], device=x.device)
            mask = steps.unsqueeze(1) < lengths.to(x.device).unsqueeze(0)  # (T, B)
        return self._run_stack(scan, x, parts, mask)

    def _run_torch(self, x, parts, lengths):
        """The whole stack in torch's fused kernel (``kernel="torch"``)."""
        state = self._pack_state(parts)
        with torch.autocast(x.device.type, torch.bfloat16, self.precision == "bf16"):
            output, final = torch_fused.fused_stack(
                self.cells, x, state, lengths, self.num_layers, self.dropout, self.training
            )
        final = final if isinstance(final, tuple) else (final,)
        if self.precision == "bf16":  # float32 out, as the layer's weights
            output, final = output.to(x.dtype), tuple(f.to(x.dtype) for f in final)
        return output, final

    def _run_stack(self, scan, x, parts, mask):
        """Layer by layer, each direction's cell by ``scan`` over the layer's input."""
        finals, layer_input = [], x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                cell_state = self._pack_state(tuple(p[k] for p in parts))
                out, fin = scan(self.cells[k], layer_input, cell_state, mask, direction == 1)
                outputs.append(out)
                finals.append(fin if isinstance(fin, tuple) else (fin,))
            # (T, B, D*H); one direction's output as it is (cat would copy it)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = dropout(layer_input, self.dropout)  # hashed mask, kernels.dropout
        # (L*D, B, H) each; one layer and direction: a view, not a copy
        final = tuple(
            p[0].unsqueeze(0) if len(p) == 1 else torch.stack(p) for p in zip(*finals, strict=True)
        )
        return layer_input, final

    # -- conversion with torch.nn (rnnkit.convert) ---------------------------------------

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **options):
        """A layer with the same sizes and a copy of ``module``'s weights."""
        return convert.from_torch(cls, module, **options)

    def to_torch(self) -> nn.RNNBase:
        """The torch.nn layer computing the same function, with a copy of the weights."""
        return convert.to_torch(self)

    @staticmethod
    def _torch_options(module) -> dict:  # the cell's options, from a torch.nn module
        return {}

    def _torch_kwargs(self) -> dict:  # the cell's options, for its torch.nn module
        return {}

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, kernel={self.kernel!r}, "
            f"precision={self.precision!r}"
        )


class RNN(RecurrentLayer):
    """Elman RNN layer, ``nonlinearity="tanh"`` or ``"relu"``; like torch.nn.RNN."""

    cell_type, torch_type = RNNCell, nn.RNN

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        nonlinearity="tanh",
        **options,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            nonlinearity=nonlinearity,
            **options,
        )
        self.nonlinearity = nonlinearity

    @staticmethod
    def _torch_options(module) -> dict:
        return {"nonlinearity": module.nonlinearity}

    def _torch_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}


class LSTM(RecurrentLayer):
    """LSTM layer, like torch.nn.LSTM; ``peephole=True`` for Gers and Schmidhuber's cell."""

    cell_type, torch_type = LSTMCell, nn.LSTM

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        peephole=False,
        **options,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            peephole=peephole,
            **options,
        )
        self.peephole = peephole


class GRU(RecurrentLayer):
    """GRU layer, like torch.nn.GRU (reset gate after the recurrent product)."""

    cell_type, torch_type = GRUCell, nn.GRU


CELLS = ("lstm", "gru", "rnn", "peephole")


def make_layer(cell: str, input_size: int, hidden_size: int, **options) -> RecurrentLayer:
    """A layer of the cell the tasks name on the command line: ``lstm``, ``gru``, ``rnn``
    (Elman, tanh) or ``peephole`` (the LSTM with peepholes); ``options`` as for the layer."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if cell in ("lstm", "peephole"):
        return LSTM(input_size, hidden_size, peephole=cell == "peephole", **options)
    return (GRU if cell == "gru" else RNN)(input_size, hidden_size, **options)
