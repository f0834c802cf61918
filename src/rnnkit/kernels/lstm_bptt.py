r"""Hand-written BPTT of the LSTM, with or without peepholes, over a whole sequence.

Forward (:class:`rnnkit.cells.LSTMCell`; gate blocks in torch.nn's order i, f, g, o; the
peephole terms p_* are absent, i.e. zero, in the standard LSTM):

    (a_i, a_f, a_g, a_o) = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i = sigma(a_i + p_i * c_{t-1}),  f = sigma(a_f + p_f * c_{t-1}),  g = tanh(a_g)
    c_t = f * c_{t-1} + i * g
    o = sigma(a_o + p_o * c_t),      h_t = o * tanh(c_t)

Backward. Two gradients flow back in time: dh_t through W_hh, and dc_t along the cell
state, through the forget gate and, with peepholes, through the gates that look at it:

    dh_t   = dL_t/dh_t + W_hh^T da_{t+1}
    da_o   = dh_t * tanh(c_t) * o (1 - o)
    dc_t   = dc_t (from step t+1) + dh_t * o (1 - tanh^2(c_t)) + p_o * da_o
    da_i   = dc_t * g * i (1 - i),   da_f = dc_t * c_{t-1} * f (1 - f),   da_g = dc_t * i (1 - g^2)
    dc_{t-1} = dc_t * f + p_i * da_i + p_f * da_f
    dp_i = sum_t da_i * c_{t-1},   dp_f = sum_t da_f * c_{t-1},   dp_o = sum_t da_o * c_t

The weight and input gradients are then the same sums over all steps as for every cell
(:func:`rnnkit.kernels.common.linear_grads`). Masking and direction follow
:mod:`rnnkit.kernels.common`, for c as for h.

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


class LSTMBPTT(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, mask, reverse) -> (output, h, c).

    The peephole weights p_i, p_f, p_o (``weight_ci``, ``weight_cf``, ``weight_co``) are
    all None for the standard LSTM.
    """

    @staticmethod
    def forward(
        ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, p_i, p_f, p_o, mask, reverse
    ):
        peephole = p_i is not None
        x_proj = input_projection(x, weight_ih, bias_ih)  # (T, B, 4H)
        gates_seq = torch.empty_like(x_proj)  # (T, B, 4H) activations i, f, g, o
        h_prev_seq = x.new_empty(x.shape[0], *h0.shape)  # (T, B, H) states entering step t
        c_prev_seq, c_new_seq = torch.empty_like(h_prev_seq), torch.empty_like(h_prev_seq)
        output = torch.empty_like(h_prev_seq)
        h, c = h0, c0
        for t in time_steps(x.shape[0], reverse):
            m = mask_at(mask, t)
            h_prev_seq[t], c_prev_seq[t] = h, c
            a_i, a_f, a_g, a_o = (x_proj[t] + functional.linear(h, weight_hh, bias_hh)).chunk(4, 1)
            if peephole:
                a_i, a_f = a_i + p_i * c, a_f + p_f * c
            input_gate, forget_gate, candidate = torch.sigmoid(a_i), torch.sigmoid(a_f), a_g.tanh()
            c_new = forget_gate * c + input_gate * candidate
            output_gate = torch.sigmoid(a_o + p_o * c_new if peephole else a_o)
            h_new = output_gate * c_new.tanh()
            gates_seq[t] = torch.cat([input_gate, forget_gate, candidate, output_gate], 1)
            c_new_seq[t], output[t] = c_new, zero_padded(m, h_new)
            h, c = carry(m, h_new, h), carry(m, c_new, c)
        sequences = (h_prev_seq, c_prev_seq, c_new_seq, gates_seq)
        ctx.save_for_backward(x, weight_ih, weight_hh, p_i, p_f, p_o, mask, *sequences)
        ctx.reverse = reverse
        return output, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_final, d_c_final):
        x, weight_ih, weight_hh, p_i, p_f, p_o, mask, *sequences = ctx.saved_tensors
        h_prev_seq, c_prev_seq, c_new_seq, gates_seq = sequences
        peephole = p_i is not None
        i, f, g, o = gates_seq.chunk(4, 2)  # each (T, B, H)
        tanh_c = c_new_seq.tanh()  # (T, B, H)
        d_gates = torch.empty_like(gates_seq)  # (T, B, 4H) da_i, da_f, da_g, da_o
        dh, dc = d_h_final, d_c_final
        for t in reversed(time_steps(x.shape[0], ctx.reverse)):
            m = mask_at(mask, t)
            dh_new = zero_padded(m, d_output[t] + dh)
            da_o = dh_new * tanh_c[t] * o[t] * (1 - o[t])
            dc_new = zero_padded(m, dc) + dh_new * o[t] * (1 - tanh_c[t] * tanh_c[t])
            if peephole:
                dc_new = dc_new + p_o * da_o
            da_i = dc_new * g[t] * i[t] * (1 - i[t])
            da_f = dc_new * c_prev_seq[t] * f[t] * (1 - f[t])
            da_g = dc_new * i[t] * (1 - g[t] * g[t])
            d_gates[t] = torch.cat([da_i, da_f, da_g, da_o], 1)
            dc_prev = dc_new * f[t]
            if peephole:
                dc_prev = dc_prev + p_i * da_i + p_f * da_f
            dh = add_carried(m, d_gates[t] @ weight_hh, dh)
            dc = add_carried(m, dc_prev, dc)
        grads = linear_grads(ctx.needs_input_grad, x, h_prev_seq, weight_ih, d_gates, d_gates)
        if peephole:
            peephole_grads = peephole_weight_grads(d_gates, c_prev_seq, c_new_seq)
        else:
            peephole_grads = (None, None, None)
        return *grads, dh, dc, *peephole_grads, None, None


def peephole_weight_grads(d_gates, c_prev_seq, c_new_seq):
    """dp_i, dp_f, dp_o: each summed over all steps and the batch, (H,)."""
    da_i, da_f, _, da_o = d_gates.chunk(4, 2)  # each (T, B, H)
    return (
        (da_i * c_prev_seq).sum((0, 1)),
        (da_f * c_prev_seq).sum((0, 1)),
        (da_o * c_new_seq).sum((0, 1)),
    )
