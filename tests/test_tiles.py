"""The products on AMX tiles over all steps (csrc/tiles.c): the input projection, whose bias
starts the sums, and the weight gradients of mixed precision.

- the input projection on tiles with a bias equals the exact product of the same bfloat16
  operands plus the bias, for one and for many blocks of rows and of columns, and from
  float32 rows (rounded in C) the same sums as from their bfloat16 copy;
- ``tile_weight_grads`` equals the float64 product of the same bfloat16 operands to float32
  rounding: a summed index that is not a multiple of 32 (zero padding), a power of two (the
  padded row stride), one source or two, one d or two (the GRU's), rows with a stride wider
  than they are; and from a float32 x the same sums as from its bfloat16 copy;
- the fused layers' weight gradients under bf16 go through it in one call (the LSTM's and
  the RNN's two weights share one d), and agree with their twin, torch.mm of the same
  bfloat16-rounded operands (``common.mixed_mm``);
- what does not fit whole tiles (an input size of 3) takes the twin.

Skipped where the CPU has no AMX-BF16 (or no compiler), and under RNNKIT_HARDWARE=generic.

Shape letters: K the summed index (steps x batch), M the gate rows, N the source columns.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import common

needs_tiles = pytest.mark.skipif(
    common.tile_weight(torch.zeros(32, 32), 16, True) is None,
    reason="no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: no weight gradients on tiles",
)


def bf16(*shape, seed=0):
    torch.manual_seed(seed)
    return torch.randn(*shape).bfloat16()


def exact(d, source):
    return (d.double().t() @ source.double()).float()  # (M, N)


@needs_tiles
@pytest.mark.parametrize(
    "rows, n, k", [(16, 16, 32), (96, 48, 64), (3200, 128, 128), (32, 16, 1056)]
)
def test_the_bias_starts_the_sums_of_the_input_projection(rows, n, k):
    x, weight = bf16(rows, k, seed=8), torch.randn(n, k).bfloat16().float()
    bias = torch.linspace(-3, 3, n)
    ours = common.mixed_linear(x, weight, True, bias)
    expected = (x.double() @ weight.double().t() + bias.double()).float()  # (rows, N)
    assert ours.dtype == torch.float32 and ours.shape == (rows, n)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(common.mixed_linear(x, weight, True), expected - bias)
    # float32 rows are rounded to bfloat16 block by block in C: the same sums
    wide = x.float() + torch.rand(rows, k) * 2**-10 * x.float().abs()  # rounds back to x
    assert torch.equal(wide.bfloat16(), x)
    torch.testing.assert_close(common.mixed_linear(wide, weight, True, bias), ours, rtol=0, atol=0)


@needs_tiles
@pytest.mark.parametrize(
    "k, m, n", [(37, 16, 16), (3190, 128, 48), (2048, 64, 32), (96, 48, 128), (5, 32, 16)]
)
def test_tile_weight_grads_equal_the_exact_product(k, m, n):
    d, x, h = bf16(k, m, seed=1), bf16(k, n, seed=2), bf16(k, n + 16, seed=3)
    grad_x, grad_h = common.tile_weight_grads(d, x, h)
    assert grad_x.shape == (m, n) and grad_h.shape == (m, n + 16)
    assert grad_x.dtype == torch.float32
    for grad, source in ((grad_x, x), (grad_h, h)):
        torch.testing.assert_close(grad, exact(d, source), rtol=1e-5, atol=1e-4)
    _, grad_other = common.tile_weight_grads(d, x, h, d_h=bf16(k, m, seed=9))
    torch.testing.assert_close(grad_other, exact(bf16(k, m, seed=9), h), rtol=1e-5, atol=1e-4)
    (alone,) = common.tile_weight_grads(d, x)
    torch.testing.assert_close(alone, grad_x, rtol=0, atol=0)
    # a float32 x is rounded to bfloat16 in C: the same sums as from its bfloat16 copy
    wide = x.float() + torch.rand(k, n) * 2**-10 * x.float().abs()  # rounds back to x
    assert torch.equal(wide.bfloat16(), x)
    (from_float,) = common.tile_weight_grads(d, wide)
    torch.testing.assert_close(from_float, grad_x, rtol=0, atol=0)


@needs_tiles
def test_rows_wider_than_the_operands():
    wide_d, wide_x = bf16(200, 80, seed=4), bf16(200, 64, seed=5)
    d, x = wide_d[:, 8:56], wide_x[:, 16:48]  # (200, 48) and (200, 32) views, strided rows
    assert common.weight_grads_on_tiles(d, x)
    (grad,) = common.tile_weight_grads(d, x)
    torch.testing.assert_close(grad, exact(d, x), rtol=1e-5, atol=1e-4)


@needs_tiles
def test_what_the_tiles_take():
    d = bf16(64, 32)
    assert common.weight_grads_on_tiles(d, bf16(64, 16))
    assert not common.weight_grads_on_tiles(d, bf16(64, 3))  # not a whole tile
    assert common.weight_grads_on_tiles(d, bf16(64, 16).float())  # x may be float32
    assert not common.weight_grads_on_tiles(d, bf16(64, 16), bf16(64, 16).float())  # not h
    assert not common.weight_grads_on_tiles(d.float(), bf16(64, 16))  # nor d
    assert not common.weight_grads_on_tiles(d, bf16(16, 64).t())  # columns not contiguous


def make_layer(cell: str, input_size: int, hidden: int):
    torch.manual_seed(6)
    if cell == "rnn":
        return rnnkit.RNN(input_size, hidden, kernel="fused", precision="bf16")
    return rnnkit.layers.make_layer(cell, input_size, hidden, kernel="fused", precision="bf16")


def weight_grads(layer, x):
    output, _ = layer(x)
    weights = [p for name, p in layer.named_parameters() if "weight_" in name]
    return torch.autograd.grad(output.pow(2).sum(), weights)


@needs_tiles
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "peephole"])
@pytest.mark.parametrize("input_size", [32, 3])
def test_fused_layers_take_the_tiles_and_agree_with_their_twin(monkeypatch, cell, input_size):
    layer = make_layer(cell, input_size, 32)
    x = torch.randn(7, 16, input_size, generator=torch.Generator().manual_seed(7))
    calls = []
    tiles = common.tile_weight_grads
    monkeypatch.setattr(common, "tile_weight_grads", lambda *a: calls.append(a) or tiles(*a))
    on_tiles = weight_grads(layer, x)
    sources = [sum(s is not None for s in args[1:3]) for args in calls]
    if input_size == 3:  # W_ih's gradient takes the twin, W_hh's the tiles
        assert sources == [1]
    else:  # one call; the LSTM's and the RNN's one d for both, the GRU's two
        assert sources == [2]
        assert (len(calls[0]) > 3 and calls[0][3] is not None) == (cell == "gru")
    monkeypatch.setattr(common, "weight_grads_on_tiles", lambda *a: False)
    calls.clear()
    in_twin = weight_grads(layer, x)
    assert not calls
    for tile, twin in zip(on_tiles, in_twin, strict=True):
        assert tile.shape == twin.shape
        # The same float32 sums in another order; the bound is the one of the earlier twin,
        # oneDNN's product, which rounded them to bfloat16 (2^-8 relative).
        torch.testing.assert_close(tile, twin, rtol=8e-3, atol=8e-3 * twin.abs().max().item())
