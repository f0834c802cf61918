"""The loops over time on AMX tiles split the batch over the threads (csrc/gates.h,
``tile_threads``): each thread runs every step of its own rows, in whole tiles of 16.

- torch.set_num_threads reaches the split (the library shares torch's OpenMP runtime), and
  a batch of fewer than two tiles stays on one thread;
- for every cell, with masks, in both directions, with and without bias: one thread and two
  or three threads (even and uneven splits of 48 rows) give the same outputs, final states
  and gradients. Rows never meet in a recurrence, so outputs and states are bit-identical;
  the sums over the batch (bias and peephole gradients) add per-thread slices and equal to
  rounding.

Skipped where the CPU has no AMX-BF16 (or no compiler), or under RNNKIT_HARDWARE=generic:
then no loop runs on tiles.

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import common, compiled

T, B, I, H = 6, 48, 5, 32
CELLS = ("lstm", "peephole", "gru", "rnn_tanh", "rnn_relu")

needs_tiles = pytest.mark.skipif(
    common.tile_weight(torch.zeros(4 * H, H), B, True) is None,
    reason="no AMX-BF16 tiles here, or RNNKIT_HARDWARE=generic: the loops run in Python",
)


@pytest.fixture
def threads():
    """Restores torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_layer(cell: str, bias: bool):
    torch.manual_seed(4)
    options = {"bidirectional": True, "bias": bias, "kernel": "fused", "precision": "bf16"}
    if cell in ("lstm", "peephole"):
        return rnnkit.LSTM(I, H, peephole=cell == "peephole", **options)
    if cell == "gru":
        return rnnkit.GRU(I, H, **options)
    return rnnkit.RNN(I, H, nonlinearity=cell.removeprefix("rnn_"), **options)


def results(layer, x, lengths):
    """Output, final state(s) and every gradient (input and parameters)."""
    output, state = layer(x, lengths=lengths)
    finals = list(state) if isinstance(state, tuple) else [state]
    loss = output.pow(2).sum() + sum((s * torch.linspace(-1, 1, s.numel()).view_as(s)).sum()
                                     for s in finals)  # fmt: skip
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return [output, *finals, *grads]


@needs_tiles
def test_set_num_threads_reaches_the_split(threads):
    lib = compiled.library()
    torch.set_num_threads(2)
    assert lib.bf16_tile_threads(batch=64) == 2
    assert lib.bf16_tile_threads(batch=16) == 1  # one tile of rows: nothing to split
    torch.set_num_threads(3)
    assert lib.bf16_tile_threads(batch=48) == 3
    assert lib.bf16_tile_threads(batch=32) == 2  # no more threads than tiles of rows
    torch.set_num_threads(1)
    assert lib.bf16_tile_threads(batch=64) == 1


@needs_tiles
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_threads_give_the_results_of_one_thread(threads, cell, bias, with_lengths):
    layer = make_layer(cell, bias)
    torch.manual_seed(5)
    x = torch.randn(T, B, I, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,)) if with_lengths else None
    runs = {}
    for count in (1, 2, 3):
        torch.set_num_threads(count)
        assert compiled.library().bf16_tile_threads(batch=B) == count
        runs[count] = results(layer, x, lengths)
    n_states = 2 if cell in ("lstm", "peephole") else 1
    for count in (2, 3):
        for k, (ours, one) in enumerate(zip(runs[count], runs[1], strict=True)):
            assert ours.shape == one.shape and ours.dtype == one.dtype == torch.float32
            if k <= n_states:  # output and final states: each row computed alike
                assert torch.equal(ours, one)
            else:
                torch.testing.assert_close(ours, one, atol=1e-6, rtol=1e-5)
