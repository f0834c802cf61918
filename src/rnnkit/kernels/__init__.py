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
hand (:mod:`rnnkit.kernels.autotune`); :func:`auto_kernel` is the fixed rule it falls back on
where tuning is off. What the machine offers (AMX tiles, MKL's packed products, native
bfloat16) is asked of :mod:`rnnkit.kernels.hardware`, whose ``RNNKIT_HARDWARE=generic``
switches all of it off.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

from torch import Tensor

from rnnkit.cells import GRUCell, LSTMCell, RNNCell, State
from rnnkit.kernels import gru_fused, lstm_fused, rnn_fused
from rnnkit.kernels.common import check_sequence, tiles_run
from rnnkit.kernels.gru_bptt import GRUBPTT
from rnnkit.kernels.gru_fused import GRUFused
from rnnkit.kernels.hardware import native_bf16
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


def auto_kernel(cell, lengths: bool, bf16: bool, batch: int, grad: bool = True) -> str:
    """The kernel a layer's ``kernel="auto"`` runs where the autotuner does not time them
    (``RNNKIT_AUTOTUNE=0``, or while torch.compile traces): ``"fused"`` or ``"torch"``;
    ``grad`` says whether the call records a graph for backward (False: inference).

    Written from timings on an Intel CPU with AMX tiles (on an AMD EPYC the plain LSTM's
    fused training ran at about half torch's speed, issue #22), with
    ``benchmarks/train_speed.py`` (training steps at (B, T, H) = (32, 100, 128),
    (64, 128, 256), (64, 128, 512), one thread on CPU time and two on wall time,
    2026-11-26, docs/benchmarks.md); other CPUs may rank them
    otherwise:
    - the peephole LSTM has no torch kernel;
    - with lengths, torch's packed path is several times slower than its dense one, and
      the fused path is 3-8x faster than it for every cell;
    - the GRU and the Elman RNN: the fused path is faster than torch's kernel at every size,
      in float32 (1.15-1.3x on one thread, 1.2-1.6x on two) and in bf16, where torch has no
      bfloat16 kernel for them and autocast casts op by op (1.4-4x);
    - the plain LSTM in float32: fused from hidden 256 (1.2x of torch's kernel on one
      thread, 1.3-1.4x on two); below, torch's kernel (fused 0.98x on one thread, 0.8x on
      two);
    - the plain LSTM in bf16: fused where its products run on AMX tiles with the loops in C
      (0.94-1.13x of torch's oneDNN kernel on one thread, 1.2-1.4x on two, where the tiles
      split the batch over the threads); elsewhere torch's oneDNN kernel, far faster than
      the fused path's per-step oneDNN calls from Python, but only where the CPU has native
      bfloat16 (:func:`rnnkit.kernels.hardware.native_bf16`): without it oneDNN builds no
      bfloat16 LSTM (an AVX2 CPU refuses), and the fused path runs;
    - inference in float32 (``rnnkit bench``'s inference steps, three runs, 2026-11-27, with
      the loops over time in C): the plain LSTM runs torch's kernel at every size (the fused
      forward 0.79-0.88x of it at hidden 128, 0.88-0.97x at 256, 0.93-1.03x at 512: it writes
      the states and activations that backward would read); the GRU and the RNN stay fused
      (1.29-1.52x and 1.25-1.49x).
    The fused path runs in C on the CPU only: elsewhere (CUDA) torch's kernels keep every
    case they can run.
    """
    if isinstance(cell, LSTMCell) and cell.peephole:
        return "fused"
    if cell.weight_hh.device.type != "cpu":
        return "torch"
    if lengths or isinstance(cell, GRUCell | RNNCell):
        return "fused"
    if bf16:
        on_tiles = tiles_run(batch, 4 * cell.hidden_size, cell.hidden_size)
        return "torch" if native_bf16("cpu") and not on_tiles else "fused"
    return "fused" if grad and cell.hidden_size >= 256 else "torch"
