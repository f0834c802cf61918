r"""The LSTM (with or without peepholes) over a whole sequence with its gate math in C.

The same BPTT as :mod:`rnnkit.kernels.lstm_bptt`, its slow twin, with the work arranged
so that each step costs one matrix product in torch and one call of C:

- forward: the input projection of all steps (biases folded in) is one matmul into a
  (T, B, 4H) buffer; step t adds W_hh h_{t-1} to its row in place, then
  ``lstm_forward`` turns that row into the activations (i, f, g, o) and writes c_t, the
  carried state and the output, with masking, in one pass;
- backward: ``lstm_backward`` turns (dL/dy_t, dh, dc) into the gate gradients da_t and
  dc_{t-1} in one pass (summing the peephole gradients on the way), then dh_{t-1} gets
  da_t W_hh in place; the weight gradients are one matmul each over all steps.

In float32 the two loops over time run in C too (``lstm_forward_mkl`` and
``lstm_backward_mkl`` in ``csrc/mkl_loops.c``), calling MKL's packed product for W_hh at each
step, where torch carries MKL (:func:`mkl_loop`); the Python loops below, with torch's packed
products, are their twin and the path elsewhere. There the projection is a plain matmul and
the C loop adds b_ih + b_hh to each row in the pass that adds W_hh h_{t-1}: folding the bias
into the matmul (addmm) first copies it into every row of (T, B, 4H), a pass of its own
(``benchmarks/bias_in_loop.py``). Where no graph is recorded (inference) that loop keeps
nothing for a backward: :func:`inference` carries the states in two rows instead of whole
sequences and records no Function.

The C source is ``csrc/lstm_gates.c``; :mod:`rnnkit.kernels.compiled` builds it. Where it
cannot (no compiler) or does not apply (not CPU, not float32: the C code has one dtype, and
float64 is left to the twin), :func:`fused_scan` runs the Python BPTT instead, which computes
the same function.

Mixed precision (``low_precision=True``, float32 only): the matrix products take bfloat16
copies of their operands and accumulate in float32. The per-step products run on the CPU's
AMX tiles where they can (:func:`rnnkit.kernels.common.tile_product`: AMX-BF16, B a
multiple of 16, H of 32 forward and of 16 backward), and the loops over time then run in C too
(``lstm_forward_tiles``, ``lstm_backward_tiles`` in ``csrc/lstm_gates.c``; the Python loops
below are their twin, :data:`LOOPS_IN_C`); elsewhere they run in bfloat16 from B x H = 8192
on (see :func:`bf16_steps`; in oneDNN where the CPU has native bfloat16, else as float32 sums
of the rounded operands, :func:`recurrent_product`) and in float32 below. The gate
pre-activations, the cell state, the gate math and the bias and peephole sums stay float32,
and the weight gradients are returned in float32 for the float32 master weights.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.cells import LSTMCell
from rnnkit.kernels.common import (
    backward_linear_grads,
    bias_grads,
    check_sequence,
    product_args,
    rounded,
    row_address,
    tile_product,
    tile_weight,
    time_steps,
    without_autocast,
)
from rnnkit.kernels.compiled import library
from rnnkit.kernels.hardware import mkl_products, native_bf16
from rnnkit.kernels.lstm_bptt import LSTMBPTT
from rnnkit.kernels.products import projection

# With the products on tiles, or in float32 with MKL's packed products, run the loops over
# time in C; False runs the Python loops with the same products, their twin (tests).
LOOPS_IN_C = True


def applies(x: Tensor, low_precision: bool = False) -> bool:
    """Whether the C path runs here: a float32 CPU tensor (the C code's one dtype), and a
    library."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    return library() is not None


# Use the packed-weight GEMMs (MKL for float32, oneDNN for bfloat16) for the per-step
# products when torch has them; False forces plain torch.mm, their slow twin (tests).
PACKED = True


def recurrent_product(weight: Tensor, batch: int, low_precision: bool):
    """``product(row) = row @ weight.T`` for one step, the weight laid out once per sequence.

    MKL and oneDNN re-pack the weight matrix on every plain matmul; for a (B, H) row that
    costs as much as the product itself, so the packed forms (the ones torch's own
    inference compiler uses) are about 1.3x faster in float32 and 2x in bfloat16 here.
    Under mixed precision ``row`` is bfloat16: see :func:`_bf16_product`.
    """
    if low_precision:
        return _bf16_product(weight, batch)
    try:
        if PACKED and weight.dtype == torch.float32 and torch.backends.mkl.is_available():
            weight = weight.contiguous()
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, batch)
            return lambda row: torch.ops.mkl._mkl_linear(row, packed, weight, None, batch)
    except (AttributeError, RuntimeError):  # a torch built without it
        pass
    weight_t = weight.t()
    return lambda row: torch.mm(row, weight_t)


def _bf16_product(weight: Tensor, batch: int):
    """:func:`recurrent_product` of a bfloat16 row: oneDNN's packed product, a bfloat16
    result, where the CPU has native bfloat16; elsewhere (oneDNN has no packed bfloat16
    product on AVX2) and as its twin the float32 sums of :func:`~rnnkit.kernels.common.mixed_mm`."""
    if PACKED and native_bf16("cpu"):
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.bfloat16(), batch)
            return lambda row: torch.ops.mkldnn._linear_pointwise(row, packed, None, "none", [], "")
        except (AttributeError, RuntimeError):  # a torch built without it
            pass
    weight_t = rounded(weight.t())  # (K, N)
    return lambda row: torch.mm(row.float(), weight_t)


def mkl_loop(x: Tensor, low_precision: bool, loops_in_c: bool) -> bool:
    """Whether the loops over time run in C with MKL's products (``csrc/mkl_loops.c``):
    float32 without mixed precision, the packed products and the calling module's C loops
    switched on, and MKL reachable from C (:func:`rnnkit.kernels.hardware.mkl_products`)."""
    if low_precision or x.dtype != torch.float32 or not (PACKED and loops_in_c):
        return False
    return mkl_products()


def mkl_scratch(batch: int, n: int, k: int) -> Tensor:
    """Room for W_hh packed by MKL for the (B, K) @ (K, N) products of one loop."""
    return torch.empty(_mkl_packed_bytes(library(), batch, n, k), dtype=torch.uint8)


@functools.lru_cache(maxsize=64)
def _mkl_packed_bytes(lib, batch: int, n: int, k: int) -> int:
    return lib.mkl_packed_bytes(m=batch, n=n, k=k)


def bf16_steps(batch: int, hidden: int, low_precision: bool) -> bool:
    """Whether the per-step products run in bfloat16 under mixed precision: only from
    B x H = 8192 on. Below that oneDNN's fixed cost per call (about 30 us on an Intel CPU
    with AMX) outweighs its speed, and MKL's packed float32 product of a small row is faster."""
    return low_precision and batch * hidden >= 8192


class LSTMFused(torch.autograd.Function):
    """(x, W_ih, W_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, mask, reverse, low_precision)
    -> (output, h, c), as :class:`rnnkit.kernels.lstm_bptt.LSTMBPTT`."""

    @staticmethod
    @without_autocast
    def forward(
        ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, p_i, p_f, p_o, mask, reverse,
        low_precision,
    ):  # fmt: skip
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
        bias = None if bias_ih is None else bias_ih + bias_hh
        x_flat = x.reshape(steps * batch, -1)  # (TB, I)
        in_c = mkl_loop(x, low_precision, LOOPS_IN_C)  # the C loop adds the bias at each step
        gates = projection(x_flat, weight_ih, low_precision, None if in_c else bias)  # (TB, 4H)
        gates = gates.view(steps, batch, -1)
        h_prev_seq = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H): row T is final
        c_prev_seq, c_new_seq = torch.empty_like(h_prev_seq), torch.empty_like(h_prev_seq)
        # The rows the products read: h itself, or its bfloat16 copy written by C.
        h_in = torch.empty_like(h_prev_seq, dtype=torch.bfloat16) if low_precision else h_prev_seq
        output = x.new_empty(steps, batch, hidden)  # (T, B, H)
        peepholes = [t.contiguous() if t is not None else None for t in (p_i, p_f, p_o)]
        mask = None if mask is None else mask.contiguous()
        first = steps - 1 if reverse else 0
        h_prev_seq[first], c_prev_seq[first] = h0, c0
        if h_in is not h_prev_seq:  # the bfloat16 copy the products read
            h_in[first] = h0
        packed = tile_weight(weight_hh, batch, low_precision)
        sizes = dict(steps=steps, batch=batch, hidden=hidden, reverse=reverse)
        p_i, p_f, p_o = peepholes
        states = dict(h_prev_seq=h_prev_seq, c_prev_seq=c_prev_seq, c_new_seq=c_new_seq)
        if in_c:  # the loop in C, the products in MKL
            library().lstm_forward_mkl(
                **sizes, kept=1, gates=gates, bias=bias, w_hh=weight_hh.detach().contiguous(),
                packed=mkl_scratch(batch, 4 * hidden, hidden),
                rec=torch.empty(batch, 4 * hidden),  # (B, 4H) W_hh h_{t-1}
                **states, p_i=p_i, p_f=p_f, p_o=p_o, mask=mask, out=output,
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            h_low = h_in if low_precision else None
            sequences = (gates, h_prev_seq, h_low, c_prev_seq, c_new_seq, mask, output)
            _forward_steps(weight_hh, reverse, low_precision, peepholes, *sequences)
        else:  # the same loop in C, with the products on tiles
            library().lstm_forward_tiles(
                **sizes, gates=gates, w_hh=packed, rec=torch.empty(batch, 4 * hidden), h_in=h_in,
                **states, p_i=p_i, p_f=p_f, p_o=p_o, mask=mask, out=output,
            )  # fmt: skip
        ctx.save_for_backward(
            x_flat, weight_ih, weight_hh, *peepholes, mask, h_in, c_prev_seq, c_new_seq, gates
        )
        ctx.reverse, ctx.low_precision, ctx.bias = reverse, low_precision, bias is not None
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return output, h_prev_seq[steps].clone(), c_prev_seq[steps].clone()

    @staticmethod
    @once_differentiable
    @without_autocast
    def backward(ctx, d_output, d_h_final, d_c_final):
        x_flat, weight_ih, weight_hh, p_i, p_f, p_o, mask, *sequences = ctx.saved_tensors
        h_in, c_prev_seq, c_new_seq, gates = sequences
        (steps, batch, _), hidden = ctx.x_shape, weight_hh.shape[1]
        low = ctx.low_precision
        d_output = d_output.contiguous()
        dh, dc = d_h_final.contiguous().clone(), d_c_final.contiguous().clone()  # (B, H)
        # da_i, da_f, da_g, da_o: (T, B, 4H) for the float matmuls; under mixed precision the
        # matmuls read C's bfloat16 copy and one (B, 4H) row of float32 suffices.
        d_gates = gates.new_empty(1 if low else steps, batch, 4 * hidden)
        d_low = torch.empty_like(gates, dtype=torch.bfloat16) if low else None
        d_peep = torch.zeros(3, hidden, dtype=torch.float64)  # (3, H) dp_i, dp_f, dp_o
        d_bias = torch.zeros(4 * hidden, dtype=torch.float64) if ctx.bias else None  # (4H,)
        packed = tile_weight(weight_hh.t(), batch, low)  # for row @ W_hh
        sums = (*d_peep, d_bias)
        sizes = dict(steps=steps, batch=batch, hidden=hidden, reverse=ctx.reverse)
        arrays = dict(gates=gates, c_prev_seq=c_prev_seq, c_new_seq=c_new_seq, p_i=p_i, p_f=p_f,
                      p_o=p_o, mask=mask, d_out=d_output, dh=dh, dc=dc)  # fmt: skip
        arrays.update(dp_i=d_peep[0], dp_f=d_peep[1], dp_o=d_peep[2], d_bias=d_bias)
        rec = torch.empty(batch, hidden)  # (B, H) da_{t+1} W_hh
        if mkl_loop(d_output, low, LOOPS_IN_C):  # the loop in C, the products in MKL
            library().lstm_backward_mkl(
                **sizes, **arrays, w_hh=weight_hh.detach().contiguous(), rec=rec,
                packed=mkl_scratch(batch, hidden, 4 * hidden), d_gates=d_gates,
            )  # fmt: skip
        elif packed is None or not LOOPS_IN_C:
            sequences = (gates, c_prev_seq, c_new_seq, mask, d_output, dh, dc, d_gates, d_low)
            _backward_steps(weight_hh, ctx.reverse, low, (p_i, p_f, p_o), *sequences, *sums)
        else:  # the same loop in C, with the products on tiles
            library().lstm_backward_tiles(
                **sizes, **arrays, w_hh_t=packed, rec=rec, d_row=d_gates, d_low=d_low
            )
        d_matmul = d_low if low else d_gates
        grads = backward_linear_grads(ctx, x_flat, h_in, weight_ih, d_matmul, d_matmul)
        d_biases = bias_grads(d_bias, ctx.x_dtype)
        peephole_grads = (None,) * 3 if p_i is None else tuple(d_peep.to(ctx.x_dtype).unbind(0))
        return *grads, *d_biases, dh, dc, *peephole_grads, None, None, None


@without_autocast
def inference(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, peepholes, mask, reverse):
    """:class:`LSTMFused`'s forward where no graph is recorded (``torch.no_grad``, or nothing
    requires a gradient) and the loop runs in C with MKL's products (:func:`mkl_loop`):
    nothing is kept for a backward that will not come. The states are two (B, H) rows used in
    turn instead of (T + 1, B, H) sequences, c_t is not stored, and no Function records the
    call. Returns (output (T, B, H), h, c)."""
    steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
    gates = projection(x.reshape(steps * batch, -1), weight_ih, False)  # (TB, 4H), no bias
    states = x.new_empty(3, 2, batch, hidden)  # h, c (2 rows each) and the one row of c_t
    states[0, 0], states[1, 0] = h0, c0
    output = x.new_empty(steps, batch, hidden)  # (T, B, H)
    p_i, p_f, p_o = [t if t is None else t.detach().contiguous() for t in peepholes]
    library().lstm_forward_mkl(
        steps=steps, batch=batch, hidden=hidden, reverse=reverse, kept=0, gates=gates,
        bias=None if bias_ih is None else bias_ih + bias_hh, w_hh=weight_hh.contiguous(),
        packed=mkl_scratch(batch, 4 * hidden, hidden), rec=torch.empty(batch, 4 * hidden),
        h_prev_seq=states[0], c_prev_seq=states[1], c_new_seq=states[2], p_i=p_i, p_f=p_f,
        p_o=p_o, mask=None if mask is None else mask.contiguous(), out=output,
    )  # fmt: skip
    return output, states[0, steps % 2].clone(), states[1, steps % 2].clone()


def records_graph(*tensors) -> bool:
    """Whether autograd records a call on ``tensors`` (None entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _forward_steps(weight_hh, reverse, low_precision, peepholes, gates, h_prev_seq, h_low,
                   c_prev_seq, c_new_seq, mask, output):  # fmt: skip
    """The forward loop: per step, W_hh h_{t-1} in torch (or on tiles) and the rest in C."""
    steps, batch, hidden = output.shape
    step_c = library().lstm_forward
    product = tile_product(weight_hh, batch, low_precision)
    bf16_products = product is not None or bf16_steps(batch, hidden, low_precision)
    product = product or recurrent_product(weight_hh, batch, bf16_products)
    h_rows = (h_low if bf16_products else h_prev_seq).unbind(0)
    gate_at, h_at, h_low_at, c_at, c_new_at, mask_at, out_at = map(
        row_address, (gates, h_prev_seq, h_low, c_prev_seq, c_new_seq, mask, output)
    )
    peephole_at = dict(zip(("p_i", "p_f", "p_o"), peepholes, strict=True))
    order = list(time_steps(steps, reverse))
    for k, t in enumerate(order):
        after = order[k + 1] if k + 1 < steps else steps  # where the carried state goes
        recurrent = product(h_rows[t])  # (B, 4H) W_hh h_{t-1}
        step_c(  # the bias is in gates already (NULL after the product)
            batch=batch, hidden=hidden, gates=gate_at(t), **product_args(recurrent), bias=None,
            h_prev=h_at(t), c_prev=c_at(t), **peephole_at, mask=mask_at(t), c_new=c_new_at(t),
            h_next=h_at(after), c_next=c_at(after), out=out_at(t), h_next_bf16=h_low_at(after),
        )  # fmt: skip


def _backward_steps(weight_hh, reverse, low, peepholes, gates, c_prev_seq, c_new_seq, mask,
                    d_output, dh, dc, d_gates, d_low, dp_i, dp_f, dp_o, d_bias):  # fmt: skip
    """The backward loop: per step, one call of C and da W_hh; dh, dc end as dL/dh_0, dL/dc_0."""
    steps, batch, hidden = d_output.shape
    step_c = library().lstm_backward
    product = tile_product(weight_hh.t(), batch, low)  # row @ W_hh
    bf16_products = product is not None or bf16_steps(batch, hidden, low)
    product = product or recurrent_product(weight_hh.t(), batch, bf16_products)
    d_rows = (d_low if bf16_products else d_gates).unbind(0)
    gate_at, c_at, c_new_at, mask_at, d_out_at, d_gate_at, d_low_at = map(
        row_address, (gates, c_prev_seq, c_new_seq, mask, d_output, d_gates, d_low)
    )
    peephole_at = dict(zip(("p_i", "p_f", "p_o"), peepholes, strict=True))
    sums = dict(dp_i=dp_i, dp_f=dp_f, dp_o=dp_o, d_bias=d_bias)
    recurrent = None  # (B, H) da_{t+1} W_hh, added to dh by the next call
    for t in reversed(time_steps(steps, reverse)):
        step_c(
            batch=batch, hidden=hidden, gates=gate_at(t), c_prev=c_at(t), c_new=c_new_at(t),
            **peephole_at, mask=mask_at(t), d_out=d_out_at(t), **product_args(recurrent), dh=dh,
            dc=dc, d_gates=d_gate_at(0 if low else t), d_gates_bf16=d_low_at(t), **sums,
        )  # fmt: skip
        recurrent = product(d_rows[t if bf16_products or not low else 0])
    dh.add_(recurrent)


def fused_scan(cell, x: Tensor, state, mask: Tensor | None = None, reverse: bool = False, *,
               low_precision: bool = False):  # fmt: skip
    """:func:`rnnkit.kernels.bptt_scan` for an LSTM cell, through the C gate math when it applies.

    Returns (output (T, B, H), (h, c)). Falls back to the Python BPTT where the C path does
    not apply (see :func:`applies`); mixed precision then casts nothing, so it computes in
    the input's dtype.
    """
    if not isinstance(cell, LSTMCell):
        raise TypeError(f"fused_scan runs LSTM cells, got {type(cell).__name__}")
    h0, c0 = state
    check_sequence(cell, x, h0, mask)
    check_sequence(cell, x, c0, mask)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    peepholes = (cell.weight_ci, cell.weight_cf, cell.weight_co) if cell.peephole else (None,) * 3
    backward = records_graph(x, h0, c0, *weights, *peepholes)  # else nothing is kept for one
    if not applies(x, low_precision):
        output, h, c = LSTMBPTT.apply(x, *weights, h0, c0, *peepholes, mask, reverse)
    elif not backward and mkl_loop(x, low_precision, LOOPS_IN_C):
        output, h, c = inference(x, *weights, h0, c0, peepholes, mask, reverse)
    else:
        output, h, c = LSTMFused.apply(
            x, *weights, h0, c0, *peepholes, mask, reverse, low_precision
        )
    return output, (h, c)
    if applies(x, low_precision):
        output, h, c = LSTMFused.apply(
            x, *weights, h0, c0, *peepholes, mask, reverse, low_precision
        )
    else:
        output, h, c = LSTMBPTT.apply(x, *weights, h0, c0, *peepholes, mask, reverse)
    return output, (h, c)
