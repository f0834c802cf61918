"""The fused LSTM (with and without peepholes) in bf16 on AMX tiles.

- with the products on tiles the loops over time run in C; the Python loops with the same
  tile products and the same step code are their twin: outputs, final states and every
  gradient equal to rounding, with masks, in both directions, with and without peepholes
  and bias;
- the tile products against oneDNN's and plain torch.mm of the rounded operands (tiles
  off), and all of
  them within 3e-2 relative error of float32 (the bound of tests/test_fused.py, which says
  why), and not bit-identical to it;
- sizes that are not whole tiles run the Python loops, still near float32.

Tile tests are skipped where the CPU has no AMX-BF16 (or no compiler), and under
RNNKIT_HARDWARE=generic.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import common, hardware, lstm_fused

T, B, I, H = 5, 16, 3, 32
BF16_RELATIVE = 3e-2


def tiles_here() -> bool:
    return common.tile_weight(torch.zeros(4 * H, H), B, True) is not None


needs_tiles = pytest.mark.skipif(
    not tiles_here(),
    reason="no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: the LSTM's loops run in Python",
)


def bf16_pair(hidden: int, **options):
    """A float32 layer and a bf16 fused one with the same weights."""
    torch.manual_seed(2)
    exact = rnnkit.LSTM(I, hidden, kernel="fused", **options)
    mixed = rnnkit.LSTM(I, hidden, kernel="fused", precision="bf16", **options)
    mixed.load_state_dict(exact.state_dict())
    return exact, mixed


def layer_results(layer, x, state, lengths):
    """Output, final states and every gradient (input, initial states, parameters)."""
    output, (h, c) = layer(x, state, lengths=lengths)
    weights = torch.linspace(-1, 1, h.numel()).view_as(h)
    loss = output.pow(2).sum() + (h * weights).sum() + 0.7 * c.pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [output, h, c, *grads]


def make_inputs(batch: int, hidden: int, directions: int):
    torch.manual_seed(3)
    x = torch.randn(T, batch, I, requires_grad=True)
    state = tuple(torch.randn(directions, batch, hidden, requires_grad=True) for _ in "hc")
    lengths = torch.randint(1, T + 1, (batch,))
    return x, state, lengths


def relative_error(ours, theirs) -> float:
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


@needs_tiles
@pytest.mark.parametrize("peephole", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_lengths", [True, False])
@pytest.mark.parametrize("hidden", [H, 48])
def test_loops_in_c_equal_the_python_loops_on_tiles(
    monkeypatch, peephole, bias, with_lengths, hidden
):
    """Bidirectional, so both directions; lengths give masks; every gradient compared. At
    H = 48 only the backward is on tiles (and in C)."""
    _, mixed = bf16_pair(hidden, bidirectional=True, peephole=peephole, bias=bias)
    x, state, lengths = make_inputs(B, hidden, 2)
    lengths = lengths if with_lengths else None
    results = []
    for in_c in (True, False):
        monkeypatch.setattr(lstm_fused, "LOOPS_IN_C", in_c)
        results.append(layer_results(mixed, x, state, lengths))
    assert len(results[0]) == 6 + len(list(mixed.parameters()))
    for ours, theirs in zip(*results, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


@needs_tiles
def test_the_c_loops_run_on_tiles(monkeypatch):
    """With tiles, the forward and backward loops are the C ones (not the Python twin)."""
    called = []
    monkeypatch.setattr(lstm_fused, "_forward_steps", lambda *a: called.append("forward"))
    monkeypatch.setattr(lstm_fused, "_backward_steps", lambda *a: called.append("backward"))
    _, mixed = bf16_pair(H, peephole=True)
    x, state, lengths = make_inputs(B, H, 1)
    layer_results(mixed, x, state, lengths)
    assert called == []


@needs_tiles
@pytest.mark.parametrize("peephole", [True, False])
def test_tiles_onednn_plain_and_float32(monkeypatch, peephole):
    """Tile products against oneDNN's (B x H = 8192, where the CPU has native bfloat16) and
    plain torch.mm of the rounded operands, all near float32, and bfloat16 did round."""
    batch, hidden = 64, 128
    exact, mixed = bf16_pair(hidden, bidirectional=True, peephole=peephole)
    x, state, lengths = make_inputs(batch, hidden, 2)
    results = []
    for layer, tiles, packed in ((mixed, 1, 1), (mixed, 0, 1), (mixed, 0, 0), (exact, 1, 1)):
        monkeypatch.setattr(common, "TILES", bool(tiles))
        monkeypatch.setattr(lstm_fused, "PACKED", bool(packed))
        results.append(layer_results(layer, x, state, lengths))
    for tiles, onednn, plain, float32 in zip(*results, strict=True):
        assert relative_error(tiles, plain) < 1e-2
        assert relative_error(onednn, plain) < 1e-2
        assert relative_error(tiles, float32) < BF16_RELATIVE
    assert relative_error(results[0][0], results[3][0]) > 1e-5


@pytest.mark.parametrize("batch,hidden", [(B, H), (B, 48), (4, 6)])
@pytest.mark.parametrize("peephole", [True, False])
def test_bf16_is_close_to_float32_but_not_equal(batch, hidden, peephole):
    """On tiles where they run (B, H); the forward in Python and the backward on tiles
    (B, 48: 48 is a multiple of 16 but not of 32); the Python loops elsewhere ((4, 6): not
    whole tiles). Two stacked bidirectional layers with lengths."""
    exact, mixed = bf16_pair(hidden, num_layers=2, bidirectional=True, peephole=peephole)
    x, state, lengths = make_inputs(batch, hidden, 4)
    results = [layer_results(layer, x, state, lengths) for layer in (mixed, exact)]
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape
        assert relative_error(ours, theirs) < BF16_RELATIVE
    assert relative_error(results[0][0], results[1][0]) > 1e-5
    assert all(p.dtype == torch.float32 for p in mixed.parameters())


def test_auto_takes_the_tiles_for_the_plain_lstm_in_bf16_where_they_run():
    """rnnkit.kernels.auto_kernel: the fused path where the products run on tiles (faster
    than torch's oneDNN kernel there), torch's kernel where they do not (a batch that is
    not whole tiles of 16, or no AMX-BF16) if the CPU has native bfloat16, else the fused
    path (oneDNN builds no bfloat16 LSTM there); the peephole LSTM, which torch has not, and
    any cell with lengths run fused."""
    off_tiles = "torch" if hardware.native_bf16("cpu") else "fused"
    plain = rnnkit.LSTM(I, H, precision="bf16")
    assert plain._kernel_name(None, B) == ("fused" if tiles_here() else off_tiles)
    assert plain._kernel_name(None, B + 1) == off_tiles
    assert rnnkit.LSTM(I, H, precision="bf16", peephole=True)._kernel_name(None, 7) == "fused"
    assert plain._kernel_name(torch.tensor([T] * 7), 7) == "fused"
