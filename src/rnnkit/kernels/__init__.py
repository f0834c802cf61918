"""Fast paths for the loop over time, each with :func:`rnnkit.scan.scan` as its slow twin.

:func:`bptt_scan` runs one cell, one layer, one direction over a whole sequence with a
hand-written backpropagation through time: the input projection of all steps as one
matrix product, a loop of recurrent products and gate math forward, a loop of gate
gradients back, then every weight gradient as one matrix product over all steps. It
computes exactly the function of ``scan``, masking rules included; ``tests/test_kernels.py``
compares the two.

:func:`fused_scan` is the same with the gate math of each step in one pass of C
(:mod:`rnnkit.kernels.lstm_fused`, :mod:`~rnnkit.kernels.gru_fused` and
:mod:`~rnnkit.kernels.rnn_fused`, built by :mod:`rnnkit.kernels.compiled`), and optionally
bfloat16 matrix products; wherever the C code cannot be built, it is :func:`bptt_scan`.
``tests/test_fused.py`` (the LSTM) and ``tests/test_fused_gru_rnn.py`` (the GRU and the
Elman RNN) compare them.

A layer's ``kernel="auto"`` runs the faster of its candidates as timed on the machine at
hand (:mod:`rnnkit.kernels.autotune`, which also holds :func:`auto_kernel`, the fixed rule
it falls back on where tuning is off). What the machine offers (AMX tiles, MKL's packed
products, native bfloat16) is asked of :mod:`rnnkit.kernels.hardware`, whose
``RNNKIT_HARDWARE=generic`` switches all of it off.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

from torch import Tensor

from rnnkit.cells import GRUCell, LSTMCell, RNNCell, State
from rnnkit.kernels import gru_fused, lstm_fused, rnn_fused
from rnnkit.kernels.autotune import auto_kernel
from rnnkit.kernels.common import check_sequence
from rnnkit.kernels.gru_bptt import GRUBPTT
from rnnkit.kernels.gru_fused import GRUFused
from rnnkit.kernels.lstm_bptt import LSTMBPTT
from rnnkit.kernels.lstm_fused import LSTMFused
from rnnkit.kernels.rnn_bptt import RNNBPTT
from rnnkit.kernels.rnn_fused import RNNFused

__all__ = [
    "auto_kernel", "bptt_scan", "fused_scan",
    "RNNBPTT", "LSTMBPTT", "GRUBPTT", "RNNFused", "LSTMFused", "GRUFused",
]  # fmt: skip


def bptt_scan(cell, x: Tensor, state: State, mask: Tensor | None = None, reverse: bool = False):
    """Run ``cell`` over ``x`` (T, B, I) from ``state``; return (output (T, B, H), final state).

    Same signature, return structure and results as :func:`rnnkit.scan.scan`: the state is
    ``h`` for the Elman RNN and the GRU and ``(h, c)`` for the LSTM; ``mask`` (T, B) bool is
    True at the real steps.
    """
    if not isinstance(cell, RNNCell | LSTMCell | GRUCell):
        raise TypeError(f"bptt_scan has no BPTT for {type(cell).__name__}; use rnnkit.scan.scan")
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if isinstance(cell, LSTMCell):
        h0, c0 = state
        check_sequence(cell, x, h0, mask)
        check_sequence(cell, x, c0, mask)
        peepholes = (
            (cell.weight_ci, cell.weight_cf, cell.weight_co) if cell.peephole else (None,) * 3
        )
        output, h, c = LSTMBPTT.apply(x, *weights, h0, c0, *peepholes, mask, reverse)
        return output, (h, c)
    check_sequence(cell, x, state, mask)
    if isinstance(cell, GRUCell):
        return GRUBPTT.apply(x, *weights, state, mask, reverse)
    return RNNBPTT.apply(x, *weights, state, mask, cell.nonlinearity, reverse)


def fused_scan(cell, x: Tensor, state: State, mask: Tensor | None = None, reverse: bool = False,
               *, low_precision: bool = False):  # fmt: skip
    """:func:`bptt_scan` with the gate math in C; ``low_precision``: bf16 matmuls.

    Same signature, return structure and results as :func:`rnnkit.scan.scan`. Mixed
    precision needs the C path (float32 on the CPU); elsewhere cells compute in their dtype.
    """
    for cell_type, module in ((LSTMCell, lstm_fused), (GRUCell, gru_fused), (RNNCell, rnn_fused)):
        if isinstance(cell, cell_type):
            return module.fused_scan(cell, x, state, mask, reverse, low_precision=low_precision)
    return bptt_scan(cell, x, state, mask, reverse)  # says which cells it runs
