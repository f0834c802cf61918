"""One time step of each recurrent cell, in the lectures' notation.

Every cell keeps one contract: ``cell(x_t, state) -> (h_t, new_state)`` and
``cell.init_state(batch)``. The state of an Elman RNN and of a GRU is ``h``; the
state of an LSTM is the pair ``(h, c)``. Cells know nothing about sequences: the
loop over time lives in :mod:`rnnkit.layers`.

Parameters are named as in torch.nn (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``) with the gate blocks stacked in torch.nn's order, so a layer converts
to and from torch.nn by copying tensors.

Shape letters: B batch, I input size, H hidden size, G number of gate blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, Tensor]

RECURRENT_INITS = ("orthogonal", "uniform")
INPUT_INITS = ("xavier", "uniform")


class RecurrentCell(nn.Module):
    """What the cells share: sizes, weights, argument checks and initialisation.

    ``gates`` is the number of H-sized blocks stacked in ``weight_ih``/``weight_hh``.
    """

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        recurrent_init: str = "orthogonal",
        input_init: str = "xavier",
    ):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if recurrent_init not in RECURRENT_INITS:
            raise ValueError(
                f"recurrent_init must be one of {RECURRENT_INITS}, got {recurrent_init!r}"
            )
        if input_init not in INPUT_INITS:
            raise ValueError(f"input_init must be one of {INPUT_INITS}, got {input_init!r}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.recurrent_init, self.input_init = recurrent_init, input_init
        gh = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gh)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gh)) if bias else None

    def reset_parameters(self) -> None:
        """Initialise every weight in one visible place.

        - Recurrent weights: each gate's H x H block orthogonal (Saxe et al. 2014), so
          repeated multiplication by W_hh neither shrinks nor grows h at the start;
          ``"uniform"`` gives torch.nn's U(-1/sqrt(H), 1/sqrt(H)) instead.
        - Input weights: each gate's block Xavier-uniform (Glorot and Bengio 2010), or
          torch.nn's uniform.
        - Biases zero; cells with gates adjust theirs in ``_reset_gate_biases``.
        """
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for block in self.weight_hh.chunk(self.gates, 0):
                if self.recurrent_init == "orthogonal":
                    nn.init.orthogonal_(block)
                else:
                    nn.init.uniform_(block, -bound, bound)
            for block in self.weight_ih.chunk(self.gates, 0):
                if self.input_init == "xavier":
                    nn.init.xavier_uniform_(block)
                else:
                    nn.init.uniform_(block, -bound, bound)
            if self.bias:
                self.bias_ih.zero_()
                self.bias_hh.zero_()
                self._reset_gate_biases()

    def _reset_gate_biases(self) -> None:
        """Gate-specific bias initialisation; none for the Elman cell."""

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: ``(h_t, new_state)``."""
        h, new_state, _ = self.trace(x_t, state)
        return h, new_state

    def trace(self, x_t: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        """One step, also returning the gate activations by name (for inspection)."""
        raise NotImplementedError

    def init_state(self, batch: int, device=None, dtype=None) -> State:
        """The zero state s_0 for a batch, as the lectures start every sequence."""
        dtype = dtype or self.weight_hh.dtype
        device = device or self.weight_hh.device
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)

    def check_step(self, x_t: Tensor, *state: Tensor) -> None:
        """Say what was expected and what came, before a matmul says it less clearly."""
        if x_t.dim() != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expected x_t of shape (batch, {self.input_size}), "
                f"got {tuple(x_t.shape)}"
            )
        for part in state:
            if part.shape != (x_t.shape[0], self.hidden_size):
                raise ValueError(
                    f"{type(self).__name__} expected a state of shape "
                    f"({x_t.shape[0]}, {self.hidden_size}), got {tuple(part.shape)}"
                )

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(RecurrentCell):
    r"""The Elman ("vanilla") RNN step.

    .. math::
        h_t = f(W_{xh} x_t + b_{xh} + W_{hh} h_{t-1} + b_{hh}),\quad f \in \{\tanh, \mathrm{relu}\}

    ``weight_ih`` is W_xh (H, I) and ``weight_hh`` is W_hh (H, H); the same weights are
    shared by every time step. The output map y_t = W_hy h_t belongs to the model heads.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", **init):
        super().__init__(input_size, hidden_size, bias, **init)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def trace(self, x_t: Tensor, state: Tensor):
        h_prev = state
        self.check_step(x_t, h_prev)
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h_prev, self.weight_hh, self.bias_hh
        )
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return h, h, {}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(RecurrentCell):
    r"""The LSTM step (Hochreiter and Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        \begin{aligned}
        (i, f, g, o) &= (\sigma, \sigma, \tanh, \sigma)
                        (W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) \\
        c_t &= f \odot c_{t-1} + i \odot g \\
        h_t &= o \odot \tanh(c_t)
        \end{aligned}

    The lectures write the gates as (i, f, o, g) = (σ, σ, σ, tanh)(W [h_{t-1}; x_t] + b): the
    same math with W split into W_hh and W_ih. The blocks are stored in torch.nn's order
    i, f, g, o so that weights copy to and from ``torch.nn.LSTM`` unchanged.

    With ``peephole=True`` (Gers and Schmidhuber 2000, "Recurrent nets that time and count")
    the gates also look at the cell state through per-unit weights p_i, p_f, p_o:

    .. math::
        \begin{aligned}
        i &= \sigma(\ldots + p_i \odot c_{t-1}), \quad f = \sigma(\ldots + p_f \odot c_{t-1}) \\
        o &= \sigma(\ldots + p_o \odot c_t)
        \end{aligned}

    Lecture slides often write the peephole gate as σ(W · [C_{t-1}, h_{t-1}, x_t] + b) with a
    full H x H block for C_{t-1}. The paper's peepholes are diagonal (each unit sees its own
    cell only), which is what this cell implements: the full-matrix form is the special case
    where that block is a diagonal matrix, so this is a restriction of the slide's form, with
    H instead of H^2 weights per gate. The output gate sees c_t, the fresh cell state, as in
    the paper.
    """

    gates = 4

    def __init__(self, input_size, hidden_size, bias=True, peephole=False, forget_bias=1.0, **init):
        super().__init__(input_size, hidden_size, bias, **init)
        self.peephole, self.forget_bias = peephole, forget_bias
        if peephole:
            self.weight_ci = nn.Parameter(torch.empty(hidden_size))  # p_i
            self.weight_cf = nn.Parameter(torch.empty(hidden_size))  # p_f
            self.weight_co = nn.Parameter(torch.empty(hidden_size))  # p_o
        self.reset_parameters()

    def _reset_gate_biases(self) -> None:
        # Forget-gate bias 1 (Jozefowicz et al. 2015, "An empirical exploration of recurrent
        # network architectures", section 2.2): f starts near 0.73, so c is remembered early on.
        # Only bias_ih carries it, so b_ih + b_hh sums to forget_bias.
        H = self.hidden_size
        self.bias_ih[H : 2 * H].fill_(self.forget_bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.peephole:
            # Peepholes start at zero: the cell begins as the standard LSTM and learns how
            # much to look at c (a choice of ours; the paper does not fix an initialisation).
            with torch.no_grad():
                for p in (self.weight_ci, self.weight_cf, self.weight_co):
                    p.zero_()

    def init_state(self, batch, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        h0 = super().init_state(batch, device, dtype)
        return h0, torch.zeros_like(h0)

    def trace(self, x_t: Tensor, state: tuple[Tensor, Tensor]):
        h_prev, c_prev = state
        self.check_step(x_t, h_prev, c_prev)
        gates = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h_prev, self.weight_hh, self.bias_hh
        )  # (B, 4H)
        i, f, g, o = gates.chunk(4, 1)
        if self.peephole:
            i = i + self.weight_ci * c_prev
            f = f + self.weight_cf * c_prev
        input_gate, forget_gate, candidate = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
        c = forget_gate * c_prev + input_gate * candidate
        if self.peephole:
            o = o + self.weight_co * c
        output_gate = torch.sigmoid(o)
        h = output_gate * torch.tanh(c)
        gates = {"input_gate": input_gate, "forget_gate": forget_gate, "output_gate": output_gate}
        return h, (h, c), gates

    def extra_repr(self) -> str:
        return super().extra_repr() + (", peephole=True" if self.peephole else "")


class GRUCell(RecurrentCell):
    r"""The gated recurrent unit step (Cho et al. 2014), as torch.nn.GRU computes it.

    .. math::
        \begin{aligned}
        r &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n &= \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}
        \end{aligned}

    Departure from the paper: Cho et al. (2014, eq. 8) apply the reset gate before the
    recurrent product, n = tanh(W x + U (r ⊙ h_{t-1})). Like torch.nn and cuDNN we apply it
    after, r ⊙ (W_hn h_{t-1} + b_hn), which lets all three recurrent products run as one
    matmul per step. The two forms are different functions; the trained quality is similar.
    Blocks are stored in torch.nn's order r, z, n.
    """

    gates = 3

    def __init__(self, input_size, hidden_size, bias=True, **init):
        super().__init__(input_size, hidden_size, bias, **init)
        self.reset_parameters()

    def trace(self, x_t: Tensor, state: Tensor):
        h_prev = state
        self.check_step(x_t, h_prev)
        xr, xz, xn = nn.functional.linear(x_t, self.weight_ih, self.bias_ih).chunk(3, 1)
        hr, hz, hn = nn.functional.linear(h_prev, self.weight_hh, self.bias_hh).chunk(3, 1)
        reset_gate = torch.sigmoid(xr + hr)
        update_gate = torch.sigmoid(xz + hz)
        candidate = torch.tanh(xn + reset_gate * hn)
        h = (1 - update_gate) * candidate + update_gate * h_prev
        return h, h, {"reset_gate": reset_gate, "update_gate": update_gate}
