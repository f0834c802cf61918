"""Dispatch of the standard cells to torch's own fused recurrent kernels.

For the Elman RNN, the LSTM without peepholes and the GRU, rnnkit's cells compute
exactly torch.nn's functions with the same parameter layout, so a whole stack of layers
can run in one call of the kernel behind torch.nn.RNN/LSTM/GRU (on CUDA, cuDNN's). The
reference twins are :func:`rnnkit.scan.scan` and :func:`rnnkit.kernels.bptt_scan`; the
layer tests compare all three.

Variable lengths go through torch's packed form: sorted by length, run, then unsorted,
which applies the same masking rules as the reference loop.

Shape letters: T time, B batch, H hidden size, L layers, D directions.
"""

from __future__ import annotations

from torch import _VF, Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import GRUCell, LSTMCell, RNNCell


def supports(cell) -> bool:
    """Whether torch has a fused kernel computing exactly this cell."""
    if isinstance(cell, LSTMCell):
        return not cell.peephole
    return isinstance(cell, GRUCell | RNNCell)


def _kernel(cell):
    if isinstance(cell, LSTMCell):
        return _VF.lstm
    if isinstance(cell, GRUCell):
        return _VF.gru
    return _VF.rnn_tanh if cell.nonlinearity == "tanh" else _VF.rnn_relu


def _flat_weights(cells) -> list[Tensor]:
    weights = []
    for cell in cells:
        weights += [cell.weight_ih, cell.weight_hh]
        if cell.bias:
            weights += [cell.bias_ih, cell.bias_hh]
    return weights


def fused_stack(cells, x: Tensor, state, lengths: Tensor | None, num_layers, dropout, training):
    """Run the whole stack on x (T, B, I) from state (L*D, B, H) or (h, c).

    ``cells`` are ordered layer by layer, forward direction before reverse, as torch.nn's
    flat weights are. Returns (output (T, B, D*H), final state like ``state``).
    """
    kernel = _kernel(cells[0])
    bidirectional = len(cells) == 2 * num_layers
    hx = tuple(s.contiguous() for s in state) if isinstance(state, tuple) else state.contiguous()
    args = (_flat_weights(cells), cells[0].bias, num_layers, dropout, training, bidirectional)
    if lengths is None:
        output, *final = kernel(x, hx, *args, False)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        hx = _permute(hx, order)
        data, *final = kernel(packed.data, packed.batch_sizes, hx, *args)
        packed_out = packed._replace(data=data)
        output, _ = pad_packed_sequence(packed_out, total_length=x.shape[0])
        final = [_permute(f, unorder) for f in final]
    return output, tuple(final) if isinstance(state, tuple) else final[0]


def _permute(hx, index: Tensor):
    if isinstance(hx, tuple):
        return tuple(h.index_select(1, index) for h in hx)
    return hx.index_select(1, index)
