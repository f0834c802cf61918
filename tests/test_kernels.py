"""The hand-written BPTT of rnnkit.kernels against autograd: gradcheck of every Function, and
equality with its slow twin rnnkit.scan.scan (outputs, final states and every gradient).

Shape letters: T time, B batch, I input size, H hidden size.
"""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.kernels import GRUBPTT, LSTMBPTT, RNNBPTT, bptt_scan
from rnnkit.scan import scan

T, B, I, H = 4, 3, 3, 2
LENGTHS = [T, 1, 3]  # one full sequence, one of a single step, one padded at the end
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_peephole", "gru"]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_cell(kind: str, bias: bool = True, dtype=torch.float64):
    """A seeded cell with every parameter random and non-zero, peepholes and biases included."""
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        cell = RNNCell(I, H, bias=bias, nonlinearity=kind.removeprefix("rnn_"))
    elif kind.startswith("lstm"):
        cell = LSTMCell(I, H, bias=bias, peephole=kind == "lstm_peephole")
    else:
        cell = GRUCell(I, H, bias=bias)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.7)
    return cell.to(dtype)


def make_inputs(cell, masked: bool, dtype=torch.float64, lengths=LENGTHS):
    """x (T, B, I), a random initial state, and the mask of ``lengths`` (or None)."""
    torch.manual_seed(1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    state = (h0, torch.randn(B, H, dtype=dtype, requires_grad=True)) if cell.gates == 4 else h0
    mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :] if masked else None  # (T, B)
    return x, state, mask


def state_tensors(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def weights_of(cell) -> tuple:
    """The tensors a Function takes, in its order; biases None without bias."""
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if isinstance(cell, LSTMCell) and cell.peephole:
        weights += (cell.weight_ci, cell.weight_cf, cell.weight_co)
    return weights


def function_of(cell, mask, reverse):
    """The cell's autograd.Function as a plain function of (x, state..., weights...)."""
    if isinstance(cell, LSTMCell):

        def run(x, h0, c0, *weights):
            peepholes = weights[4:] or (None, None, None)
            return LSTMBPTT.apply(x, *weights[:4], h0, c0, *peepholes, mask, reverse)

    elif isinstance(cell, GRUCell):

        def run(x, h0, *weights):
            return GRUBPTT.apply(x, *weights, h0, mask, reverse)

    else:

        def run(x, h0, *weights):
            return RNNBPTT.apply(x, *weights, h0, mask, cell.nonlinearity, reverse)

    return run


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, bias, masked, reverse):
    cell = make_cell(kind, bias)
    x, state, mask = make_inputs(cell, masked)
    weights = tuple(
        w.detach().clone().requires_grad_() if w is not None else None for w in weights_of(cell)
    )
    inputs = (x, *state_tensors(state), *weights)
    assert torch.autograd.gradcheck(function_of(cell, mask, reverse), inputs)


def loss_and_grads(run, cell, x, state, mask, reverse):
    """Output, final state, and the gradients of a random linear loss w.r.t. everything."""
    output, final = run(cell, x, state, mask, reverse)
    torch.manual_seed(2)
    loss = (output * torch.randn_like(output)).sum()
    for s in state_tensors(final):
        loss = loss + (s * torch.randn_like(s)).sum()
    wrt = (x, *state_tensors(state), *cell.parameters())
    return output, state_tensors(final), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_equals_scan(kind, bias, masked, reverse, dtype):
    cell = make_cell(kind, bias, dtype)
    x, state, mask = make_inputs(cell, masked, dtype)
    out, final, grads = loss_and_grads(bptt_scan, cell, x, state, mask, reverse)
    ref_out, ref_final, ref_grads = loss_and_grads(scan, cell, x, state, mask, reverse)
    tol = TOLERANCE[dtype]
    assert out.shape == ref_out.shape == (T, B, H) and out.dtype == dtype
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    assert len(final) == len(ref_final) == len(state_tensors(state))
    for got, want in zip(final, ref_final, strict=True):
        assert got.shape == want.shape == (B, H) and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert len(grads) == len(ref_grads)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.shape == want.shape and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_padding(kind, reverse):
    """Padded outputs are exactly zero, and each sequence ends where its own steps end."""
    cell = make_cell(kind)
    x, state, mask = make_inputs(cell, masked=True)
    with torch.no_grad():
        output, final = bptt_scan(cell, x, state, mask, reverse)
    assert output.shape == (T, B, H)
    assert (output[~mask] == 0).all()
    for b, length in enumerate(LENGTHS):
        last_real = 0 if reverse else length - 1  # the last step the loop visits
        assert torch.equal(state_tensors(final)[0][b], output[last_real, b])
        alone = tuple(s[b : b + 1] for s in state_tensors(state))
        alone = alone if isinstance(state, tuple) else alone[0]
        with torch.no_grad():
            alone_out, alone_final = bptt_scan(cell, x[:length, b : b + 1], alone, None, reverse)
        torch.testing.assert_close(output[:length, b : b + 1], alone_out, rtol=1e-12, atol=1e-12)
        for got, want in zip(state_tensors(final), state_tensors(alone_final), strict=True):
            torch.testing.assert_close(got[b : b + 1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence_keeps_initial_state(kind):
    """A sequence of length 0 returns its initial state, and its gradient passes straight back."""
    cell = make_cell(kind)
    x, state, mask = make_inputs(cell, masked=True, lengths=[T, 0, 2])
    output, final = bptt_scan(cell, x, state, mask)
    for got, initial in zip(state_tensors(final), state_tensors(state), strict=True):
        assert torch.equal(got[1], initial[1])
    loss = sum(s[1].sum() for s in state_tensors(final))
    grads = torch.autograd.grad(loss, (x, *state_tensors(state)))
    assert (grads[0][:, 1] == 0).all()
    for d_initial in grads[1:]:
        assert torch.equal(d_initial[1], torch.ones(H, dtype=d_initial.dtype))
        assert (d_initial[[0, 2]] == 0).all()
    assert (output[:, 1] == 0).all()


def test_rejects_bad_inputs():
    cell = make_cell("gru")
    x, state, _ = make_inputs(cell, masked=False)
    with pytest.raises(ValueError, match="expected x of shape"):
        bptt_scan(cell, x[:, :, :2], state)
    with pytest.raises(ValueError, match="expected a state of shape"):
        bptt_scan(cell, x, state[:2])
    with pytest.raises(ValueError, match="bool mask"):
        bptt_scan(cell, x, state, torch.ones(T, B))
    with pytest.raises(TypeError, match="no BPTT"):
        bptt_scan(torch.nn.Linear(I, H), x, state)
