"""Plumbing shared by the hand-written BPTT of every cell: argument checks, step order,
masking, the two linear maps that feed the gates, the per-step bfloat16 product on AMX
tiles, and what the fused paths (LSTM, GRU, RNN) share around their C code: row addresses,
mixed-precision matrix products and weight gradients.

The gate math of each cell lives in its own module; what is here knows nothing about
gates. The masking rules are those of :func:`rnnkit.scan.scan`: at a padded step the state
is carried unchanged and the output is exactly zero, so with m = mask[t]

    s_t = m * s_new + (1 - m) * s_{t-1},    y_t = m * h_new

and, going back, the gradient into s_new is m * (dy_t + ds_t) while (1 - m) * ds_t passes
straight to s_{t-1}.

The cells' equations are written for the forward direction. With ``reverse=True`` the
loop visits t = T-1, ..., 0: "s_{t-1}" is then the state of step t+1, the one visited
before, and the backward loop walks t = 0, ..., T-1.

Shape letters: T time, B batch, I input size, H hidden size, G number of gate blocks.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.kernels.compiled import library
from rnnkit.kernels.hardware import amx_tiles
from rnnkit.kernels.hardware import mkl_products as mkl_products  # benchmarks import it here


def check_sequence(cell, x: Tensor, h0: Tensor, mask: Tensor | None) -> None:
    """Say what was expected and what came, once for the whole sequence."""
    name = type(cell).__name__
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[2] != cell.input_size:
        raise ValueError(
            f"{name} expected x of shape (T >= 1, batch, {cell.input_size}), got {tuple(x.shape)}"
        )
    if h0.shape != (x.shape[1], cell.hidden_size):
        raise ValueError(
            f"{name} expected a state of shape ({x.shape[1]}, {cell.hidden_size}), "
            f"got {tuple(h0.shape)}"
        )
    if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape[:2]):
        raise ValueError(
            f"expected a bool mask of shape {tuple(x.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def time_steps(steps: int, reverse: bool) -> range:
    """The order in which the forward pass visits the steps; backward walks it reversed."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


def mask_at(mask: Tensor | None, t: int) -> Tensor | None:
    """The mask column of step t, (B, 1) bool, or None when every step is real."""
    return None if mask is None else mask[t].unsqueeze(1)


def carry(m: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """The state after a step: the new one at real steps, the old one carried at padded."""
    return new if m is None else torch.where(m, new, old)


def zero_padded(m: Tensor | None, value: Tensor) -> Tensor:
    """``value`` at real steps and exactly zero at padded ones (outputs and their gradients)."""
    return value if m is None else value.masked_fill(~m, 0.0)


def add_carried(m: Tensor | None, d_prev: Tensor, d_state: Tensor) -> Tensor:
    """Add to d_prev the gradient a padded step passes straight through its copied state."""
    return d_prev if m is None else d_prev + d_state.masked_fill(m, 0.0)


def input_projection(x: Tensor, weight_ih: Tensor, bias_ih: Tensor | None) -> Tensor:
    """W_ih x_t + b_ih for all steps as one matrix product, (T, B, I) -> (T, B, GH)."""
    steps, batch, inputs = x.shape
    projected = functional.linear(x.reshape(steps * batch, inputs), weight_ih, bias_ih)
    return projected.reshape(steps, batch, -1)  # (T, B, GH)


def linear_grads(needs, x, h_prev_seq, weight_ih, dgates_ih, dgates_hh):
    """dL/dW = sum_t dL_t/dW for the input and recurrent maps, each as one matmul over all steps.

    ``dgates_ih`` (T, B, GH) is dL/d(W_ih x_t + b_ih) and ``dgates_hh`` dL/d(W_hh h_{t-1} +
    b_hh); they differ only for the GRU. ``needs`` is ``ctx.needs_input_grad`` for
    (x, weight_ih, weight_hh, bias_ih, bias_hh); a gradient nobody asked for is None.
    Returns (dx, dW_ih, dW_hh, db_ih, db_hh).
    """
    steps, batch, inputs = x.shape
    d_ih = dgates_ih.reshape(steps * batch, -1)  # (TB, GH)
    d_hh = dgates_hh.reshape(steps * batch, -1)  # (TB, GH)
    dx = (d_ih @ weight_ih).reshape(steps, batch, inputs) if needs[0] else None
    d_weight_ih = d_ih.t() @ x.reshape(steps * batch, inputs) if needs[1] else None
    d_weight_hh = d_hh.t() @ h_prev_seq.reshape(steps * batch, -1) if needs[2] else None
    d_bias_ih = d_ih.sum(0) if needs[3] else None
    d_bias_hh = d_hh.sum(0) if needs[4] else None
    return dx, d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh


# Run the per-step products of mixed precision on AMX tiles where they can; False sends them
# to oneDNN and MKL (rnnkit.kernels.lstm_fused.recurrent_product), their slow twin (tests).
TILES = True


def tiles_run(batch: int, n: int, k: int) -> bool:
    """Whether (B, K) @ (K, N) products in bfloat16 run on AMX tiles here: the tiles switched
    on (:data:`TILES`, :func:`rnnkit.kernels.hardware.amx_tiles`) and whole tiles (B and N
    multiples of 16, K of 32)."""
    return TILES and batch % 16 == 0 and n % 16 == 0 and k % 32 == 0 and amx_tiles()


# Round and pack float32 weights for the tiles in one pass of C; False packs them with torch's
# permuted copy, their twin (tests).
PACK_IN_C = True


def tile_weight(weight: Tensor, batch: int, low_precision: bool) -> Tensor | None:
    """``weight`` (N, K) packed for :func:`tile_product` and the C loops, or None where the
    tiles do not run (not mixed precision, or not :func:`tiles_run`). Then the callers take
    oneDNN or MKL."""
    n, k = weight.shape
    if not (low_precision and tiles_run(batch, n, k)):
        return None
    if PACK_IN_C and weight.dtype == torch.float32 and weight.device.type == "cpu":
        packed = torch.empty(n // 16, k // 32, 16, 16, 2, dtype=torch.bfloat16)
        rows, cols = weight.stride()  # W_hh.t() is packed from W_hh itself, no copy
        library().bf16_pack_tiles(
            n=n, k=k, src=weight, row_stride=rows, col_stride=cols, packed=packed
        )
        return packed
    weight = weight.detach().to(torch.bfloat16).contiguous()
    # packed[nb, kb, r, j, i] = weight[16 nb + j, 32 kb + 2 r + i] (csrc/tiles.c)
    return weight.view(n // 16, 16, k // 32, 16, 2).permute(0, 2, 3, 1, 4).contiguous()


def tile_product(weight: Tensor, batch: int, low_precision: bool, bias: Tensor | None = None):
    """``product(row) = row @ weight.T (+ bias)`` for one step on the CPU's AMX tiles, or None
    (see :func:`tile_weight`). It is 3-5x faster than oneDNN's call on a step's small rows.

    ``row`` is (B, K), bfloat16 or float32 (rounded block by block in C), with contiguous
    rows; the (B, N) float32 result is one buffer, overwritten by the next call. ``bias``
    (N,) starts the sums (float32).
    """
    packed = tile_weight(weight, batch, low_precision)
    if packed is None:
        return None
    (n, k), lib = weight.shape, library()
    out = torch.empty(batch, n)  # (B, N)
    bias = None if bias is None else bias.detach().float().contiguous()  # (N,)

    def product(row: Tensor) -> Tensor:  # holds packed, out and bias alive, not just addresses
        single = row.dtype == torch.float32
        call = lib.bf16_tile_product_rows_f32 if single else lib.bf16_tile_product_rows
        call(m=batch, n=n, k=k, a=row, lda=row.stride(0), packed=packed, c=out, ldc=n, bias=bias)
        return out

    return product


# -- the fused paths' plumbing: addresses for the C code, mixed precision -------------------


def rounded(t: Tensor) -> Tensor:
    """``t`` rounded to bfloat16 and widened back to float32: an operand of the products of
    mixed precision off the tiles. The product of two such terms is exact in float32 (8 + 8
    significant bits of its 24), so float32 sums of them are the tiles' sums."""
    return t.bfloat16().float()


def mixed_mm(a: Tensor, b: Tensor, low_precision: bool) -> Tensor:
    """a @ b; under mixed precision float32 sums of the bfloat16-rounded terms, as on the
    tiles. torch.mm of two bfloat16 tensors would round its sums to bfloat16, and where the
    CPU has no native bfloat16 it ran 15-40x slower than this (an AMD EPYC, Zen 3)."""
    if low_precision:
        return torch.mm(rounded(a), rounded(b))
    return a @ b


def mixed_linear(a: Tensor, weight: Tensor, low_precision: bool, bias: Tensor | None = None):
    """a @ weight.T + bias over all steps, float32 out: on AMX tiles under mixed precision
    where they run (the bias starting the sums), else one addmm, of the bfloat16-rounded
    operands under mixed precision (:func:`mixed_mm`'s sums).

    An input size that is not a multiple of 32 (a one-hot alphabet of 84 characters, say) is
    padded with zero columns in both operands, which changes no sum, to stay on the tiles:
    off them, widening the bfloat16 result of the earlier twin alone cost a charlm step
    10 ms of 90 (on an Intel CPU with AMX)."""
    pad = -a.shape[1] % 32
    if pad and low_precision and tiles_run(a.shape[0], weight.shape[0], a.shape[1] + pad):
        a = functional.pad(a.bfloat16(), (0, pad))
        weight = functional.pad(weight.detach().bfloat16(), (0, pad))
    product = tile_product(weight, a.shape[0], low_precision, bias)
    if product is not None:  # float32 rows are rounded in C, block by block
        single = a.dtype == torch.float32 and a.stride(1) == 1
        return product(a if single else a.bfloat16().contiguous())
    if low_precision:
        a, weight = rounded(a), rounded(weight)
    return functional.linear(a, weight, bias)


def row_address(tensor: Tensor | None):
    """``row(t)``: the address of row t of a contiguous tensor, for C (None stays NULL)."""
    if tensor is None:
        return lambda step=0: None
    base, stride = tensor.data_ptr(), tensor.stride(0) * tensor.element_size()
    return lambda step=0: base + step * stride


def product_args(product: Tensor | None) -> dict:
    """The C arguments rec and rec_bf16 for a per-step product, NULL where absent."""
    low = product is not None and product.dtype == torch.bfloat16
    return {"rec": None if low else product, "rec_bf16": product if low else None}


def without_autocast(method):
    """Run a Function's forward or backward (or another caller of the C loops) with autocast
    off (the C code reads buffers in the input's dtype, and mixed precision here is the
    explicit ``low_precision``) and with flush-to-zero and denormals-are-zero on this thread,
    then the caller's setting back (``denormals_off`` in csrc/rnn_gates.c says why: a
    saturated gate's gradient turned denormal made a char-LM step 8x slower). Values below
    1.2e-38 (float32) become 0; OpenMP's other threads keep their own setting.

    Plain calls where nothing needs a context manager (entering torch.autocast and a
    generator-based one cost 10 us here)."""

    @functools.wraps(method)
    def wrapper(*args):
        lib = library()
        old = None if lib is None else lib.denormals_off()
        try:
            if not torch.is_autocast_enabled("cpu"):
                return method(*args)
            with torch.autocast("cpu", enabled=False):
                return method(*args)
        finally:
            if old is not None:
                lib.denormals_restore(old=old)

    return wrapper


def backward_linear_grads(ctx, x_flat, h_in, weight_ih, d_ih, d_hh):
    """The end of a fused backward: (dx (T, B, I) in the input's dtype, dW_ih, dW_hh) from
    :func:`mixed_linear_grads` over the steps ``ctx`` saw, as ``ctx.needs_input_grad`` asks."""
    steps, needs, low = ctx.x_shape[0], ctx.needs_input_grad, ctx.low_precision
    grads = mixed_linear_grads(needs, x_flat, h_in[:steps], weight_ih, d_ih, d_hh, low)
    dx = None if grads[0] is None else grads[0].view(ctx.x_shape).to(ctx.x_dtype)
    return dx, *grads[1:]


def bias_grads(d_bias: Tensor | None, dtype) -> tuple:
    """(db_ih, db_hh) for cells whose two biases add up (LSTM, RNN): one sum, two tensors, so
    that the two ``.grad`` never alias."""
    if d_bias is None:
        return None, None
    d_bias = d_bias.to(dtype)
    return d_bias, d_bias.clone()


def mixed_linear_grads(needs, x_flat, h_prev_seq, weight_ih, d_ih, d_hh, low_precision):
    """(dx (TB, I), dW_ih, dW_hh), each one matmul over all steps (or None if not needed).

    ``d_ih`` and ``d_hh`` (T, B, GH) are dL/d(W_ih x_t + b_ih) and dL/d(W_hh h_{t-1} + b_hh),
    one tensor for the LSTM and the RNN, two for the GRU.
    """
    same = d_ih is d_hh  # the LSTM and the RNN: one d for both weights, transposed once
    both = needs[1] and needs[2]
    d_ih = d_ih.reshape(x_flat.shape[0], -1)  # (TB, GH)
    d_hh = d_hh.reshape(x_flat.shape[0], -1)  # (TB, GH)
    h_flat = h_prev_seq.reshape(x_flat.shape[0], -1)  # (TB, H)
    dx = mixed_linear(d_ih, weight_ih.t(), low_precision) if needs[0] else None
    if both and low_precision and weight_grads_on_tiles(d_ih, x_flat, h_flat, d_hh):
        return dx, *tile_weight_grads(d_ih, x_flat, h_flat, None if same else d_hh)
    d_weight_ih = weight_grad(d_ih, x_flat, low_precision) if needs[1] else None
    d_weight_hh = weight_grad(d_hh, h_flat, low_precision) if needs[2] else None
    return dx, d_weight_ih, d_weight_hh


def weight_grad(d: Tensor, source: Tensor, low_precision: bool) -> Tensor:
    """d^T @ source over all steps: on tiles where they run, else :func:`mixed_mm`."""
    if low_precision and weight_grads_on_tiles(d, source):
        return tile_weight_grads(d, source)[0]
    return mixed_mm(d.t(), source, low_precision)


def weight_grads_on_tiles(d: Tensor, x: Tensor, h: Tensor | None = None, d_h=None) -> bool:
    """Whether :func:`tile_weight_grads` runs for ``d`` (TB, GH), ``x`` (TB, N), ``h``
    (TB, N') and ``d_h`` (TB, GH): tiles here (:func:`tiles_run`), CPU rows of unit stride,
    d, h and d_h bfloat16, x bfloat16 or float32, GH, N and N' multiples of 16."""
    kinds = {torch.bfloat16}
    for t, allowed in ((d, kinds), (x, kinds | {torch.float32}), (h, kinds), (d_h, kinds)):
        if t is not None and (t.dtype not in allowed or t.device.type != "cpu" or t.stride(1) != 1):
            return False
    return all(tiles_run(d.shape[1], s.shape[1], 32) for s in (x, h) if s is not None)


def tile_weight_grads(d: Tensor, x: Tensor, h: Tensor | None = None, d_h: Tensor | None = None):
    """[d^T @ x] or [d^T @ x, d_h^T @ h] (d_h defaults to d), float32 (GH, N): the weight
    gradients summed over all steps, on AMX tiles in one call of C (``csrc/tiles.c``); the
    same sums as :func:`mixed_mm`, its twin. Each d is transposed once; each source is
    packed in the tiles' pairs of rows, a float32 x rounded on the way."""
    rows, gates = d.shape  # (TB, GH)
    padded = -(-rows // 32) * 32  # the summed index, zeros past TB
    d_h = d if d_h is None else d_h

    def transposed():  # d^T, (GH, TB+) with the row stride padded; C reuses x's for h
        return torch.empty(gates, padded + 32, dtype=torch.bfloat16)

    def pairs(n: int):  # a (TB, N) source in the tiles' pairs of rows
        return torch.empty(n * padded, dtype=torch.bfloat16)

    grads = [torch.empty(gates, s.shape[1]) for s in (x, h) if s is not None]  # (GH, N) each
    arguments = dict(k=rows, m=gates, d=d, ldd=d.stride(0), d_t=transposed(), n_x=x.shape[1])
    arguments.update(x=x, ldx=x.stride(0), x_f32=int(x.dtype == torch.float32))
    arguments.update(x_packed=pairs(x.shape[1]), dw_x=grads[0])
    arguments.update(d_h=None, ldd_h=0, d_h_t=None, n_h=0, h=None, ldh=0, h_packed=None, dw_h=None)
    if h is not None:
        arguments.update(d_h=d_h, ldd_h=d_h.stride(0), n_h=h.shape[1], h=h, ldh=h.stride(0))
        arguments.update(h_packed=pairs(h.shape[1]), dw_h=grads[1])
        arguments.update(d_h_t=None if d_h is d else transposed())
    library().bf16_weight_grads(**arguments)
    return grads
