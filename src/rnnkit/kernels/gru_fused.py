r"""The GRU over a whole sequence with its gate math in C.

The same BPTT as :mod:`rnnkit.kernels.gru_bptt`, its slow twin (the equations are in its
docstring), arranged as :mod:`rnnkit.kernels.lstm_fused` arranges the LSTM's, so that each
step costs one matrix product in torch and one call of C:

- forward: the input projection of all steps is one matmul into a (T, B, 3H) buffer, with
  b_ih and the r and z blocks of b_hh folded in. torch.nn.GRU applies the reset gate to
  W_hn h_{t-1} + b_hn, so the recurrent product W_hh h_{t-1} of step t stays a (B, 3H) row of
  its own and b_hn stays apart: ``gru_forward`` adds the r and z blocks to the projection,
  forms n = tanh(x_n + r * (W_hn h_{t-1} + b_hn)), and writes the carried state and the
  output, with masking, in one pass; it keeps W_hn h_{t-1} + b_hn for the backward;
- backward: ``gru_backward`` turns (dL/dy_t, dh) into the two gate gradients of the step,
  d(W_ih x_t + b_ih) = (da_r, da_z, da_n) and d(W_hh h_{t-1} + b_hh) = (da_r, da_z, r da_n),
  and the part of dh_{t-1} that skips W_hh (dh_t z); then dh_{t-1} gets the second times
  W_hh. The weight gradients are one matmul each over all steps.

In float32 the loops over time run in C with MKL's per-step products where torch carries
MKL (``gru_forward_mkl``, ``gru_backward_mkl`` in ``csrc/mkl_loops.c``), as the LSTM's do,
and add the projection's biases at each step there.

The C source is ``csrc/gru_gates.c``; :mod:`rnnkit.kernels.compiled` builds it. Where it
cannot, or does not apply (see :func:`rnnkit.kernels.lstm_fused.applies`), :func:`fused_scan`
runs the Python BPTT, which computes the same function. Mixed precision
(``low_precision=True``) is the LSTM's, bfloat16 operands with float32 accumulation in the
matrix products, with one difference: the per-step products run on the CPU's AMX tiles
where they can (:func:`rnnkit.kernels.common.tile_product`, 3-5x faster than oneDNN on a
step's small rows, and so in bfloat16 at every size; the loops over time then run in C too,
``gru_forward_tiles`` and ``gru_backward_tiles``), else as the LSTM's do (from B x H =
8192, see :func:`rnnkit.kernels.lstm_fused.bf16_steps`). The gate math, state and bias
sums stay float32.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import GRUCell
from rnnkit.kernels.common import (
    backward_linear_grads,
    check_sequence,
    product_args,
    row_address,
    tile_product,
    tile_weight,
    time_steps,
    without_autocast,
)
from rnnkit.kernels.compiled import library
from rnnkit.kernels.gru_bptt import GRUBPTT
from rnnkit.kernels.lstm_fused import (
    applies,
    bf16_steps,
    mkl_loop,
    mkl_scratch,
    recurrent_product,
)
from rnnkit.kernels.products import projection

# With the products on tiles, or in float32 with MKL's packed products, run the loops over
# time in C; False runs the Python loops with the same products, their twin (tests).
LOOPS_IN_C = True


class GRUFused(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, mask, reverse, low_precision) -> (output, h_final),
    as :class:`rnnkit.kernels.gru_bptt.GRUBPTT`."""

    @staticmethod
    @without_autocast
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, mask, reverse, low_precision):
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
        x_flat = x.reshape(steps * batch, -1)  # (TB, I)
        b_hn = bias = None
        if bias_ih is not None:  # b_hr and b_hz join the projection; r multiplies b_hn
            b_hn = bias_hh[2 * hidden :].contiguous()  # (H,)
            bias = bias_ih + torch.cat([bias_hh[: 2 * hidden], torch.zeros_like(b_hn)])
        in_c = mkl_loop(x, low_precision, LOOPS_IN_C)  # the C loop adds the bias at each step
        gates = projection(x_flat, weight_ih, low_precision, None if in_c else bias)  # (TB, 3H)
        gates = gates.view(steps, batch, 3 * hidden)
        h_prev_seq = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H): row T is final
        h_n_seq = x.new_empty(steps, batch, hidden)  # (T, B, H) W_hn h_{t-1} + b_hn
        # The rows the products read: h itself, or its bfloat16 copy written by C.
        h_in = torch.empty_like(h_prev_seq, dtype=torch.bfloat16) if low_precision else h_prev_seq
        output = x.new_empty(steps, batch, hidden)  # (T, B, H)
        mask = None if mask is None else mask.contiguous()
        first = steps - 1 if reverse else 0
        h_prev_seq[first] = h0
        if h_in is not h_prev_seq:  # the bfloat16 copy the products read
            h_in[first] = h0
        packed = tile_weight(weight_hh, batch, low_precision)
        sizes = dict(steps=steps, batch=batch, hidden=hidden, reverse=reverse)
        arrays = dict(gates=gates, rec=torch.empty(batch, 3 * hidden), b_hn=b_hn, mask=mask)
        arrays.update(h_prev_seq=h_prev_seq, h_n_seq=h_n_seq, out=output)  # rec: W_hh h_{t-1}
        if in_c:  # the loop in C, the products in MKL
            library().gru_forward_mkl(
                **sizes, **arrays, bias=bias, w_hh=weight_hh.detach().contiguous(),
                packed=mkl_scratch(batch, 3 * hidden, hidden),
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            h_low = h_in if low_precision else None
            sequences = (gates, b_hn, h_prev_seq, h_low, mask, h_n_seq, output)
            _forward_steps(weight_hh, reverse, low_precision, *sequences)
        else:  # the same loop in C, with the products on tiles
            library().gru_forward_tiles(**sizes, **arrays, w_hh=packed, h_in=h_in)
        ctx.save_for_backward(x_flat, weight_ih, weight_hh, mask, h_prev_seq, h_in, h_n_seq, gates)
        ctx.reverse, ctx.low_precision, ctx.bias = reverse, low_precision, bias_ih is not None
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return output, h_prev_seq[steps].clone()

    @staticmethod
    @once_differentiable
    @without_autocast
    def backward(ctx, d_output, d_h_final):
        x_flat, weight_ih, weight_hh, mask, h_prev_seq, h_in, h_n_seq, gates = ctx.saved_tensors
        (steps, batch, _), hidden = ctx.x_shape, weight_hh.shape[1]
        low = ctx.low_precision
        d_output = d_output.contiguous()
        dh = d_h_final.contiguous().clone()  # (B, H)
        # d_ih (da_r, da_z, da_n) and d_hh (da_r, da_z, r da_n): (T, B, 3H) each for the float
        # matmuls; under mixed precision the matmuls read C's bfloat16 copies and one row of
        # float32 each suffices.
        d_ih = gates.new_empty(1 if low else steps, batch, 3 * hidden)
        d_hh = torch.empty_like(d_ih)
        d_ih_low = torch.empty_like(gates, dtype=torch.bfloat16) if low else None
        d_hh_low = torch.empty_like(gates, dtype=torch.bfloat16) if low else None
        d_bias_ih = torch.zeros(3 * hidden, dtype=torch.float64) if ctx.bias else None  # (3H,)
        d_bias_hn = torch.zeros(hidden, dtype=torch.float64) if ctx.bias else None  # (H,)
        packed = tile_weight(weight_hh.t(), batch, low)  # for row @ W_hh
        sums = (d_bias_ih, d_bias_hn)
        sizes = dict(steps=steps, batch=batch, hidden=hidden, reverse=ctx.reverse)
        arrays = dict(gates=gates, h_n_seq=h_n_seq, h_prev_seq=h_prev_seq, mask=mask, dh=dh)
        arrays.update(d_out=d_output, d_bias_ih=d_bias_ih, d_bias_hn=d_bias_hn)
        arrays.update(rec=torch.empty(batch, hidden))  # (B, H) d_hh_{t+1} W_hh
        if mkl_loop(d_output, low, LOOPS_IN_C):  # the loop in C, the products in MKL
            library().gru_backward_mkl(
                **sizes, **arrays, w_hh=weight_hh.detach().contiguous(), d_ih=d_ih, d_hh=d_hh,
                packed=mkl_scratch(batch, hidden, 3 * hidden),
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            sequences = (gates, h_n_seq, h_prev_seq, mask, d_output, dh, d_ih, d_hh)
            _backward_steps(weight_hh, ctx.reverse, low, *sequences, d_ih_low, d_hh_low, *sums)
        else:  # the same loop in C, with the products on tiles
            library().gru_backward_tiles(
                **sizes, **arrays, w_hh_t=packed, d_ih_row=d_ih, d_hh_row=d_hh,
                d_ih_low=d_ih_low, d_hh_low=d_hh_low,
            )  # fmt: skip
        d_ih, d_hh = (d_ih_low, d_hh_low) if low else (d_ih, d_hh)
        grads = backward_linear_grads(ctx, x_flat, h_in, weight_ih, d_ih, d_hh)
        d_biases = (None, None)
        if ctx.bias:
            d_bias_hh = torch.cat([d_bias_ih[: 2 * hidden], d_bias_hn])
            d_biases = (d_bias_ih.to(ctx.x_dtype), d_bias_hh.to(ctx.x_dtype))
        return *grads, *d_biases, dh, None, None, None


def _forward_steps(weight_hh, reverse, low_precision, gates, b_hn, h_prev_seq, h_low, mask,
                   h_n_seq, output):  # fmt: skip
    """The forward loop: per step, W_hh h_{t-1} in torch (or on tiles) and the rest in C."""
    steps, batch, hidden = h_n_seq.shape
    step_c = library().gru_forward
    product = tile_product(weight_hh, batch, low_precision)
    bf16_products = product is not None or bf16_steps(batch, hidden, low_precision)
    product = product or recurrent_product(weight_hh, batch, bf16_products)
    h_rows = (h_low if bf16_products else h_prev_seq).unbind(0)
    gate_at, h_n_at, h_at, h_low_at, out_at, mask_at = map(
        row_address, (gates, h_n_seq, h_prev_seq, h_low, output, mask)
    )
    order = list(time_steps(steps, reverse))
    for k, t in enumerate(order):
        after = order[k + 1] if k + 1 < steps else steps  # where the carried state goes
        recurrent = product(h_rows[t])  # (B, 3H) W_hh h_{t-1}
        step_c(  # the bias is in gates already (NULL after the product)
            batch=batch, hidden=hidden, gates=gate_at(t), **product_args(recurrent), bias=None,
            b_hn=b_hn, h_prev=h_at(t), mask=mask_at(t), h_n=h_n_at(t), h_next=h_at(after),
            out=out_at(t), h_next_bf16=h_low_at(after),
        )  # fmt: skip


def _backward_steps(weight_hh, reverse, low, gates, h_n_seq, h_prev_seq, mask, d_output, dh,
                    d_ih, d_hh, d_ih_low, d_hh_low, d_bias_ih, d_bias_hn):  # fmt: skip
    """The backward loop: per step, one call of C and d_hh W_hh; dh ends as dL/dh_0."""
    steps, batch, hidden = h_n_seq.shape
    step_c = library().gru_backward
    product = tile_product(weight_hh.t(), batch, low)  # row @ W_hh
    bf16_products = product is not None or bf16_steps(batch, hidden, low)
    product = product or recurrent_product(weight_hh.t(), batch, bf16_products)
    d_rows = (d_hh_low if bf16_products else d_hh).unbind(0)
    gate_at, h_n_at, h_at, mask_at, d_out_at = map(
        row_address, (gates, h_n_seq, h_prev_seq, mask, d_output)
    )
    d_ih_at, d_hh_at, d_ih_low_at, d_hh_low_at = map(row_address, (d_ih, d_hh, d_ih_low, d_hh_low))
    recurrent = None  # (B, H) d_hh_{t+1} W_hh, added to dh by the next call
    for t in reversed(time_steps(steps, reverse)):
        row = 0 if low else t
        step_c(
            batch=batch, hidden=hidden, gates=gate_at(t), h_n=h_n_at(t), h_prev=h_at(t),
            mask=mask_at(t), d_out=d_out_at(t), **product_args(recurrent), dh=dh,
            d_ih=d_ih_at(row), d_hh=d_hh_at(row), d_ih_bf16=d_ih_low_at(t),
            d_hh_bf16=d_hh_low_at(t), d_bias_ih=d_bias_ih, d_bias_hn=d_bias_hn,
        )  # fmt: skip
        recurrent = product(d_rows[t if bf16_products else row])
    dh.add_(recurrent)


def fused_scan(cell, x: Tensor, h0: Tensor, mask: Tensor | None = None, reverse: bool = False,
               *, low_precision: bool = False):  # fmt: skip
    """:func:`rnnkit.kernels.bptt_scan` for a GRU cell, through the C gate math when it applies.

    Returns (output (T, B, H), h). Falls back to the Python BPTT where the C path does not
    apply; mixed precision then casts nothing, so it computes in the input's dtype.
    """
    if not isinstance(cell, GRUCell):
        raise TypeError(f"gru_fused.fused_scan runs GRU cells, got {type(cell).__name__}")
    check_sequence(cell, x, h0, mask)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if applies(x, low_precision):
        return GRUFused.apply(x, *weights, h0, mask, reverse, low_precision)
    return GRUBPTT.apply(x, *weights, h0, mask, reverse)
