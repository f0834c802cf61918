r"""Hand-written BPTT of the Elman RNN over a whole sequence, one layer, one direction.

Forward, with the same W_xh, W_hh at every step (:class:`rnnkit.cells.RNNCell`):

    a_t = W_xh x_t + b_xh + W_hh h_{t-1} + b_hh,    h_t = f(a_t),    f in {tanh, relu}

Backward (the lectures' BPTT). With dh_t the gradient reaching h_t from the loss at step
t and from every later step through h_{t+1}:

    dh_t  = dL_t/dh_t + W_hh^T da_{t+1}
    da_t  = dh_t * f'(a_t)              tanh: 1 - h_t^2,   relu: 1[h_t > 0]
    dW_xh = sum_t da_t x_t^T,   dW_hh = sum_t da_t h_{t-1}^T,   db_xh = db_hh = sum_t da_t
    dx_t  = W_xh^T da_t,        dh_0  = W_hh^T da_1

The first line is the loop; the sums are one matrix product each over all T steps once
every da_t is in a (T, B, H) buffer. Masking and direction follow :mod:`rnnkit.kernels.common`.

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


class RNNBPTT(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, mask, nonlinearity, reverse) -> (output, h_final)."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, mask, nonlinearity, reverse):
        activation = torch.tanh if nonlinearity == "tanh" else torch.relu
        x_proj = input_projection(x, weight_ih, bias_ih)  # (T, B, H)
        h_prev_seq = x.new_empty(x.shape[0], *h0.shape)  # (T, B, H) state entering step t
        h_new_seq = torch.empty_like(h_prev_seq)  # (T, B, H) f(a_t) before masking
        output = torch.empty_like(h_prev_seq)
        h = h0
        for t in time_steps(x.shape[0], reverse):
            m = mask_at(mask, t)
            h_prev_seq[t] = h
            h_new = activation(x_proj[t] + functional.linear(h, weight_hh, bias_hh))
            h_new_seq[t], output[t] = h_new, zero_padded(m, h_new)
            h = carry(m, h_new, h)
        ctx.save_for_backward(x, weight_ih, weight_hh, h_prev_seq, h_new_seq, mask)
        ctx.nonlinearity, ctx.reverse = nonlinearity, reverse
        return output, h

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_final):
        x, weight_ih, weight_hh, h_prev_seq, h_new_seq, mask = ctx.saved_tensors
        if ctx.nonlinearity == "tanh":
            slope = 1 - h_new_seq * h_new_seq  # (T, B, H) tanh'(a_t)
        else:
            slope = (h_new_seq > 0).to(h_new_seq.dtype)  # relu'(a_t), 0 at a_t = 0 as torch
        d_pre = torch.empty_like(h_new_seq)  # (T, B, H) da_t
        dh = d_h_final
        for t in reversed(time_steps(x.shape[0], ctx.reverse)):
            m = mask_at(mask, t)
            d_pre[t] = zero_padded(m, d_output[t] + dh) * slope[t]
            dh = add_carried(m, d_pre[t] @ weight_hh, dh)
        grads = linear_grads(ctx.needs_input_grad, x, h_prev_seq, weight_ih, d_pre, d_pre)
        return *grads, dh, None, None, None
