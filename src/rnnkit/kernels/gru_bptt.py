r"""Hand-written BPTT of the GRU over a whole sequence, one layer, one direction.

Forward (:class:`rnnkit.cells.GRUCell`, torch.nn's form with the reset gate applied after
the recurrent product; blocks in the order r, z, n):

    (x_r, x_z, x_n) = W_ih x_t + b_ih,    (h_r, h_z, h_n) = W_hh h_{t-1} + b_hh
    r = sigma(x_r + h_r),   z = sigma(x_z + h_z),   n = tanh(x_n + r * h_n)
    h_t = (1 - z) * n + z * h_{t-1}

Backward. dh_t reaches h_{t-1} both through W_hh and directly through the update gate:

    dh_t  = dL_t/dh_t + (gradient from step t+1, below)
    da_n  = dh_t * (1 - z) * (1 - n^2)
    da_z  = dh_t * (h_{t-1} - n) * z (1 - z)
    da_r  = da_n * h_n * r (1 - r)
    input side:     d(W_ih x_t + b_ih)     = (da_r, da_z, da_n)
    recurrent side: d(W_hh h_{t-1} + b_hh) = (da_r, da_z, r * da_n)
    dh_{t-1} = dh_t * z + W_hh^T (da_r, da_z, r * da_n)

Because r multiplies h_n, the n block's gradient differs on the two sides, so this cell
keeps two (T, B, 3H) buffers where the others keep one, and h_n from the forward pass.
The weight and input gradients are then the sums of :func:`rnnkit.kernels.common.linear_grads`.
Masking and direction follow :mod:`rnnkit.kernels.common`.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional

from rnnkit.kernels.common import (
    add_carried,
    carry,
    input_projection,
    linear_grads,
    mask_at,
    time_steps,
    zero_padded,
)


class GRUBPTT(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, mask, reverse) -> (output, h_final)."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, mask, reverse):
        x_proj = input_projection(x, weight_ih, bias_ih)  # (T, B, 3H)
        gates_seq = torch.empty_like(x_proj)  # (T, B, 3H) activations r, z, n
        h_prev_seq = x.new_empty(x.shape[0], *h0.shape)  # (T, B, H) state entering step t
        h_n_seq = torch.empty_like(h_prev_seq)  # (T, B, H) W_hn h_{t-1} + b_hn
        output = torch.empty_like(h_prev_seq)
        h = h0
        for t in time_steps(x.shape[0], reverse):
            m = mask_at(mask, t)
            x_r, x_z, x_n = x_proj[t].chunk(3, 1)
            h_r, h_z, h_n = functional.linear(h, weight_hh, bias_hh).chunk(3, 1)
            reset_gate, update_gate = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            candidate = torch.tanh(x_n + reset_gate * h_n)
            h_new = (1 - update_gate) * candidate + update_gate * h
            gates_seq[t] = torch.cat([reset_gate, update_gate, candidate], 1)
            h_prev_seq[t], h_n_seq[t], output[t] = h, h_n, zero_padded(m, h_new)
            h = carry(m, h_new, h)
        ctx.save_for_backward(x, weight_ih, weight_hh, h_prev_seq, h_n_seq, gates_seq, mask)
        ctx.reverse = reverse
        return output, h

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_final):
        x, weight_ih, weight_hh, h_prev_seq, h_n_seq, gates_seq, mask = ctx.saved_tensors
        r, z, n = gates_seq.chunk(3, 2)  # each (T, B, H)
        d_gates_ih = torch.empty_like(gates_seq)  # (T, B, 3H) da_r, da_z, da_n
        d_gates_hh = torch.empty_like(gates_seq)  # (T, B, 3H) da_r, da_z, r * da_n
        dh = d_h_final
        for t in reversed(time_steps(x.shape[0], ctx.reverse)):
            m = mask_at(mask, t)
            dh_new = zero_padded(m, d_output[t] + dh)
            da_n = dh_new * (1 - z[t]) * (1 - n[t] * n[t])
            da_z = dh_new * (h_prev_seq[t] - n[t]) * z[t] * (1 - z[t])
            da_r = da_n * h_n_seq[t] * r[t] * (1 - r[t])
            d_gates_ih[t] = torch.cat([da_r, da_z, da_n], 1)
            d_gates_hh[t] = torch.cat([da_r, da_z, r[t] * da_n], 1)
            dh = add_carried(m, dh_new * z[t] + d_gates_hh[t] @ weight_hh, dh)
        grads = linear_grads(ctx.needs_input_grad, x, h_prev_seq, weight_ih, d_gates_ih, d_gates_hh)
        return *grads, dh, None, None
