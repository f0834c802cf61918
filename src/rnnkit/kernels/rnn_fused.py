r"""The Elman RNN (tanh or relu) over a whole sequence with its step math in C.

The same BPTT as :mod:`rnnkit.kernels.rnn_bptt`, its slow twin (the equations are in its
docstring), arranged as :mod:`rnnkit.kernels.lstm_fused` arranges the LSTM's, so that each
step costs one matrix product in torch and one call of C:

- forward: the input projection of all steps (both biases folded in) is one matmul into a
  (T, B, H) buffer; ``rnn_forward`` adds W_hh h_{t-1} to row t, applies f and writes the
  carried state and the output, with masking, in one pass, leaving f(a_t) in the row;
- backward: ``rnn_backward`` turns (dL/dy_t, dh) into da_t = dh_t * f'(a_t), read off
  h_t = f(a_t), in one pass (summing the bias gradient on the way); then dh_{t-1} gets
  da_t W_hh. The weight gradients are one matmul each over all steps.

In float32 the loops over time run in C with MKL's per-step products where torch carries
MKL (``rnn_forward_mkl``, ``rnn_backward_mkl`` in ``csrc/mkl_loops.c``), as the LSTM's do,
and add the projection's biases at each step there.

The C source is ``csrc/rnn_gates.c``; :mod:`rnnkit.kernels.compiled` builds it. Where it
cannot, or does not apply (see :func:`rnnkit.kernels.lstm_fused.applies`), :func:`fused_scan`
runs the Python BPTT, which computes the same function. Mixed precision
(``low_precision=True``) is the LSTM's, bfloat16 operands with float32 accumulation in the
matrix products, with one difference: the per-step products run on the CPU's AMX tiles
where they can (:func:`rnnkit.kernels.common.tile_product`, 3-5x faster than oneDNN on a
step's small rows, and so in bfloat16 at every size; the loops over time then run in C too,
``rnn_forward_tiles`` and ``rnn_backward_tiles``), else as the LSTM's do (from B x H =
8192, see :func:`rnnkit.kernels.lstm_fused.bf16_steps`). The nonlinearity, state and bias
sum stay float32.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import RNNCell
from rnnkit.kernels.common import (
    backward_linear_grads,
    bias_grads,
    check_sequence,
    product_args,
    row_address,
    tile_product,
    tile_weight,
    time_steps,
    without_autocast,
)
from rnnkit.kernels.compiled import library
from rnnkit.kernels.lstm_fused import (
    applies,
    bf16_steps,
    mkl_loop,
    mkl_scratch,
    recurrent_product,
)
from rnnkit.kernels.products import projection
from rnnkit.kernels.rnn_bptt import RNNBPTT

RELU = {"tanh": 0, "relu": 1}  # the C code's switch
# With the products on tiles, or in float32 with MKL's packed products, run the loops over
# time in C; False runs the Python loops with the same products, their twin (tests).
LOOPS_IN_C = True


class RNNFused(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, mask, nonlinearity, reverse, low_precision)
    -> (output, h_final), as :class:`rnnkit.kernels.rnn_bptt.RNNBPTT`."""

    @staticmethod
    @without_autocast
    def forward(
        ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, mask, nonlinearity, reverse,
        low_precision,
    ):  # fmt: skip
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
        x_flat = x.reshape(steps * batch, -1)  # (TB, I)
        bias = None if bias_ih is None else bias_ih + bias_hh
        in_c = mkl_loop(x, low_precision, LOOPS_IN_C)  # the C loop adds the bias at each step
        h_new_seq = projection(x_flat, weight_ih, low_precision, None if in_c else bias)
        h_new_seq = h_new_seq.view(steps, batch, hidden)  # (T, B, H), f(a_t) after
        h_prev_seq = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H): row T is final
        # The rows the products read: h itself, or its bfloat16 copy written by C.
        h_in = torch.empty_like(h_prev_seq, dtype=torch.bfloat16) if low_precision else h_prev_seq
        output = x.new_empty(steps, batch, hidden)  # (T, B, H)
        mask = None if mask is None else mask.contiguous()
        first = steps - 1 if reverse else 0
        h_prev_seq[first] = h0
        if h_in is not h_prev_seq:  # the bfloat16 copy the products read
            h_in[first] = h0
        relu, packed = RELU[nonlinearity], tile_weight(weight_hh, batch, low_precision)
        sizes = dict(steps=steps, batch=batch, hidden=hidden, relu=relu, reverse=reverse)
        arrays = dict(pre=h_new_seq, rec=torch.empty(batch, hidden), h_prev_seq=h_prev_seq)
        arrays.update(mask=mask, out=output)  # rec: (B, H) W_hh h_{t-1}
        if in_c:  # the loop in C, the products in MKL
            library().rnn_forward_mkl(
                **sizes, **arrays, bias=bias, w_hh=weight_hh.detach().contiguous(),
                packed=mkl_scratch(batch, hidden, hidden),
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            sequences = (h_new_seq, h_prev_seq, h_in if low_precision else None, mask, output)
            _forward_steps(weight_hh, relu, reverse, low_precision, *sequences)
        else:  # the same loop in C, with the products on tiles
            library().rnn_forward_tiles(**sizes, **arrays, w_hh=packed, h_in=h_in)
        ctx.save_for_backward(x_flat, weight_ih, weight_hh, mask, h_in, h_new_seq)
        ctx.reverse, ctx.low_precision, ctx.bias = reverse, low_precision, bias_ih is not None
        ctx.x_shape, ctx.x_dtype, ctx.relu = x.shape, x.dtype, relu
        return output, h_prev_seq[steps].clone()

    @staticmethod
    @once_differentiable
    @without_autocast
    def backward(ctx, d_output, d_h_final):
        x_flat, weight_ih, weight_hh, mask, h_in, h_new_seq = ctx.saved_tensors
        (steps, batch, _), hidden = ctx.x_shape, weight_hh.shape[1]
        low = ctx.low_precision
        d_output = d_output.contiguous()
        dh = d_h_final.contiguous().clone()  # (B, H)
        # da_t: (T, B, H) for the float matmuls; under mixed precision the matmuls read C's
        # bfloat16 copy and one (B, H) row of float32 suffices.
        d_pre = h_new_seq.new_empty(1 if low else steps, batch, hidden)
        d_low = torch.empty_like(h_new_seq, dtype=torch.bfloat16) if low else None
        d_bias = torch.zeros(hidden, dtype=torch.float64) if ctx.bias else None  # (H,)
        packed = tile_weight(weight_hh.t(), batch, low)  # for row @ W_hh
        sizes = dict(steps=steps, batch=batch, hidden=hidden, relu=ctx.relu, reverse=ctx.reverse)
        arrays = dict(h_new=h_new_seq, mask=mask, d_out=d_output, dh=dh, d_bias=d_bias)
        arrays.update(rec=torch.empty(batch, hidden))  # (B, H) da_{t+1} W_hh
        if mkl_loop(d_output, low, LOOPS_IN_C):  # the loop in C, the products in MKL
            library().rnn_backward_mkl(
                **sizes, **arrays, w_hh=weight_hh.detach().contiguous(), d_pre=d_pre,
                packed=mkl_scratch(batch, hidden, hidden),
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            sequences = (h_new_seq, mask, d_output, dh, d_pre, d_low, d_bias)
            _backward_steps(weight_hh, ctx.relu, ctx.reverse, low, *sequences)
        else:  # the same loop in C, with the products on tiles
            library().rnn_backward_tiles(**sizes, **arrays, w_hh_t=packed, d_row=d_pre, d_low=d_low)
        d_matmul = d_low if low else d_pre
        grads = backward_linear_grads(ctx, x_flat, h_in, weight_ih, d_matmul, d_matmul)
        return *grads, *bias_grads(d_bias, ctx.x_dtype), dh, None, None, None, None


def _forward_steps(weight_hh, relu, reverse, low_precision, h_new_seq, h_prev_seq, h_low, mask,
                   output):  # fmt: skip
    """The forward loop: per step, W_hh h_{t-1} in torch and the rest in one call of C."""
    steps, batch, hidden = h_new_seq.shape
    step_c = library().rnn_forward
    product = tile_product(weight_hh, batch, low_precision)
    bf16_products = product is not None or bf16_steps(batch, hidden, low_precision)
    product = product or recurrent_product(weight_hh, batch, bf16_products)
    h_rows = (h_low if bf16_products else h_prev_seq).unbind(0)
    pre_at, h_at, h_low_at, out_at, mask_at = map(
        row_address, (h_new_seq, h_prev_seq, h_low, output, mask)
    )
    order = list(time_steps(steps, reverse))
    for k, t in enumerate(order):
        after = order[k + 1] if k + 1 < steps else steps  # where the carried state goes
        recurrent = product(h_rows[t])  # (B, H) W_hh h_{t-1}
        step_c(  # the bias is in pre already (NULL after the product)
            batch=batch, hidden=hidden, relu=relu, pre=pre_at(t), **product_args(recurrent),
            bias=None, h_prev=h_at(t), mask=mask_at(t), h_next=h_at(after), out=out_at(t),
            h_next_bf16=h_low_at(after),
        )  # fmt: skip


def _backward_steps(weight_hh, relu, reverse, low, h_new_seq, mask, d_output, dh, d_pre, d_low,
                    d_bias):  # fmt: skip
    """The backward loop: per step, one call of C and da_t W_hh in torch; dh ends as dL/dh_0."""
    steps, batch, hidden = h_new_seq.shape
    step_c = library().rnn_backward
    product = tile_product(weight_hh.t(), batch, low)  # row @ W_hh
    bf16_products = product is not None or bf16_steps(batch, hidden, low)
    product = product or recurrent_product(weight_hh.t(), batch, bf16_products)
    d_rows = (d_low if bf16_products else d_pre).unbind(0)
    h_new_at, mask_at, d_out_at, d_pre_at, d_low_at = map(
        row_address, (h_new_seq, mask, d_output, d_pre, d_low)
    )
    recurrent = None  # (B, H) da_{t+1} W_hh, added to dh by the next call
    for t in reversed(time_steps(steps, reverse)):
        row = 0 if low else t
        step_c(
            batch=batch, hidden=hidden, relu=relu, h_new=h_new_at(t), mask=mask_at(t),
            d_out=d_out_at(t), **product_args(recurrent), dh=dh, da=d_pre_at(row),
            da_bf16=d_low_at(t), d_bias=d_bias,
        )  # fmt: skip
        recurrent = product(d_rows[t if bf16_products else row])
    dh.add_(recurrent)


def fused_scan(cell, x: Tensor, h0: Tensor, mask: Tensor | None = None, reverse: bool = False,
               *, low_precision: bool = False):  # fmt: skip
    """:func:`rnnkit.kernels.bptt_scan` for an Elman cell, through the C step when it applies.

    Returns (output (T, B, H), h). Falls back to the Python BPTT where the C path does not
    apply; mixed precision then casts nothing, so it computes in the input's dtype.
    """
    if not isinstance(cell, RNNCell):
        raise TypeError(f"rnn_fused.fused_scan runs RNN cells, got {type(cell).__name__}")
    check_sequence(cell, x, h0, mask)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if applies(x, low_precision):
        return RNNFused.apply(x, *weights, h0, mask, cell.nonlinearity, reverse, low_precision)
    return RNNBPTT.apply(x, *weights, h0, mask, cell.nonlinearity, reverse)
