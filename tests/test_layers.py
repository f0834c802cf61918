"""Layers against torch.nn, against themselves across kernels, and their masking rules."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

KERNELS = ["loop", "bptt", "torch", "fused"]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
PAIRS = [
    (rnnkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    (rnnkit.LSTM, nn.LSTM, {}),
    (rnnkit.GRU, nn.GRU, {}),
]
PAIR_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]
T, B, I, H = 6, 4, 3, 5
LENGTHS = torch.tensor([6, 2, 4, 1])


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def run_torch(module, x, lengths):
    """torch.nn's answer, with lengths through pack_padded_sequence."""
    if lengths is None:
        return module(x)
    packed = pack_padded_sequence(x, lengths, module.batch_first, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, module.batch_first, total_length=T)
    return out, state


def assert_close(a, b, tol):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


def grads(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("ours,theirs,options", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "num_layers,bidirectional,batch_first,with_lengths",
    list(itertools.product([1, 2, 3], [False, True], [False, True], [False, True])),
)
def test_parity_with_torch_nn(
    ours, theirs, options, kernel, num_layers, bidirectional, batch_first, with_lengths
):
    dtype = torch.float64
    torch.manual_seed(num_layers * 8 + bidirectional * 4 + batch_first * 2 + with_lengths)
    ref = theirs(
        I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional, **options
    ).to(dtype)
    layer = ours.from_torch(ref, kernel=kernel)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    lengths = LENGTHS if with_lengths else None
    out_ref, state_ref = run_torch(ref, x, lengths)
    out, state = layer(x, lengths=lengths)
    assert_close(out, out_ref, TOL[dtype])
    for s, s_ref in zip(as_tuple(state), as_tuple(state_ref), strict=True):
        assert_close(s, s_ref, TOL[dtype])
    weights = torch.randn_like(out)
    loss = (out * weights).sum() + sum(s.sum() for s in as_tuple(state))
    loss_ref = (out_ref * weights).sum() + sum(s.sum() for s in as_tuple(state_ref))
    loss.backward()
    loss_ref.backward()
    # Both sides list parameters layer by layer, direction by direction, ih before hh.
    for g, g_ref in zip(grads(layer), grads(ref), strict=True):
        assert_close(g, g_ref, TOL[dtype])


@pytest.mark.parametrize("ours,theirs,options", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_parity_float32(ours, theirs, options, kernel):
    torch.manual_seed(3)
    ref = theirs(I, H, 2, bidirectional=True, **options)
    layer = ours.from_torch(ref, kernel=kernel)
    x = torch.randn(T, B, I, requires_grad=True)
    out_ref, _ = run_torch(ref, x, LENGTHS)
    out, _ = layer(x, lengths=LENGTHS)
    assert_close(out, out_ref, TOL[torch.float32])
    (g_ref,) = torch.autograd.grad(out_ref.sum(), x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert_close(g, g_ref, TOL[torch.float32])


def make(kind, kernel, **kw):
    torch.manual_seed(0)
    if kind == "peephole":
        layer = rnnkit.LSTM(I, H, peephole=True, kernel=kernel, **kw)
        with torch.no_grad():  # non-zero peepholes, so they matter
            for cell in layer.cells:
                for p in (cell.weight_ci, cell.weight_cf, cell.weight_co):
                    p.uniform_(-0.5, 0.5)
        return layer.double()
    cls = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[kind]
    return cls(I, H, kernel=kernel, **kw).double()


KINDS = ["rnn", "lstm", "gru", "peephole"]


def kernels_for(kind):
    return ["loop", "bptt", "fused"] if kind == "peephole" else KERNELS


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_agree_including_peephole(kind):
    x = torch.randn(T, B, I, dtype=torch.float64)
    results = []
    for kernel in kernels_for(kind):
        layer = make(kind, kernel, num_layers=2, bidirectional=True)
        out, state = layer(x, lengths=LENGTHS)
        out.pow(2).sum().backward()
        results.append((out, as_tuple(state), grads(layer)))
    for out, state, g in results[1:]:
        assert_close(out, results[0][0], 1e-10)
        for a, b in zip(state + tuple(g), results[0][1] + tuple(results[0][2]), strict=True):
            assert_close(a, b, 1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_two_truncated_windows_equal_one_run(kind):
    for kernel in kernels_for(kind):
        layer = make(kind, kernel, num_layers=2, batch_first=True)
        x = torch.randn(B, 2 * T, I, dtype=torch.float64)
        whole, whole_state = layer(x)
        first, state = layer(x[:, :T])
        second, state = layer(x[:, T:], rnnkit.detach_state(state))
        assert_close(torch.cat([first, second], 1), whole, 1e-12)
        for a, b in zip(as_tuple(state), as_tuple(whole_state), strict=True):
            assert_close(a, b, 1e-12)


def test_detach_state_cuts_the_graph_and_keeps_values():
    h = torch.randn(2, 3, requires_grad=True) * 2
    c = torch.randn(2, 3, requires_grad=True) * 2
    dh, dc = rnnkit.detach_state((h, c))
    assert not dh.requires_grad and not dc.requires_grad
    assert torch.equal(dh, h) and torch.equal(dc, c)
    assert rnnkit.detach_state(None) is None


# -- masking rules ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_padded_outputs_are_exactly_zero(kind):
    for kernel in kernels_for(kind):
        layer = make(kind, kernel, num_layers=2, bidirectional=True)
        out, _ = layer(torch.randn(T, B, I, dtype=torch.float64), lengths=LENGTHS)
        for b, n in enumerate(LENGTHS.tolist()):
            assert torch.all(out[n:, b] == 0)
            assert torch.all(out[:n, b] != 0)


@pytest.mark.parametrize("kind", KINDS)
def test_final_state_is_at_last_real_step_and_padding_is_ignored(kind):
    """A sequence alone, unpadded, gives the same outputs and state as inside a padded batch."""
    for kernel in kernels_for(kind):
        layer = make(kind, kernel, num_layers=2, bidirectional=True)
        x = torch.randn(T, B, I, dtype=torch.float64)
        out, state = layer(x, lengths=LENGTHS)
        for b, n in enumerate(LENGTHS.tolist()):
            garbage = x.clone()
            garbage[n:, b] = 1e3  # whatever sits in the padding must not matter
            out_b, state_b = layer(x[:n, b : b + 1])
            assert_close(out[:n, b : b + 1], out_b, 1e-12)
            for s, s_b in zip(as_tuple(state), as_tuple(state_b), strict=True):
                assert_close(s[:, b : b + 1], s_b, 1e-12)
            out_g, _ = layer(garbage, lengths=LENGTHS)
            assert_close(out_g, out, 1e-12)


def test_reverse_direction_starts_at_each_sequences_last_real_step():
    layer = make("lstm", "loop", bidirectional=True)
    x = torch.randn(T, 1, I, dtype=torch.float64)
    out, _ = layer(x, lengths=torch.tensor([3]))
    alone, _ = layer(x[:3])
    # The reverse half at step 2 has seen only step 2 of the real sequence, not the padding.
    assert_close(out[:3, :, H:], alone[:, :, H:], 1e-12)


def test_packed_sequence_in_gives_packed_sequence_out():
    layer = make("gru", "auto")
    x = torch.randn(T, B, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    out, state = layer(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    padded, lengths = pad_packed_sequence(out, total_length=T)
    ref_out, ref_state = layer(x, lengths=LENGTHS)
    assert torch.equal(lengths, LENGTHS)
    assert_close(padded, ref_out, 1e-12)
    assert_close(state, ref_state, 1e-12)


def test_dropout_keeps_padding_zero_and_is_off_in_eval():
    layer = make("lstm", "loop", num_layers=3, dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, _ = layer(x, lengths=LENGTHS)
    assert torch.all(out[LENGTHS[1] :, 1] == 0)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b)


# -- initial state ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_initial_state_zero_given_or_learned(kind):
    for kernel in kernels_for(kind):
        layer = make(kind, kernel, num_layers=2, learn_init=True)
        x = torch.randn(T, B, I, dtype=torch.float64)
        zero_parts = tuple(torch.zeros(2, B, H, dtype=torch.float64) for _ in layer.initial_state)
        zero_state = zero_parts if len(zero_parts) == 2 else zero_parts[0]
        learned, _ = layer(x)  # learned s_0 starts at zero
        given, _ = layer(x, zero_state)
        assert_close(learned, given, 1e-12)
        learned.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.initial_state)


def test_given_state_changes_the_output():
    layer = make("gru", "auto")
    x = torch.randn(T, B, I, dtype=torch.float64)
    out_zero, _ = layer(x)
    out_given, _ = layer(x, torch.ones(1, B, H, dtype=torch.float64))
    assert not torch.allclose(out_zero, out_given)


# -- conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize("ours,theirs,options", PAIRS, ids=PAIR_IDS)
def test_to_torch_round_trip(ours, theirs, options):
    layer = ours(I, H, 2, bidirectional=True, batch_first=True, **options)
    module = layer.to_torch()
    assert isinstance(module, theirs) and module.batch_first and module.bidirectional
    x = torch.randn(B, T, I)
    assert_close(module(x)[0], layer(x)[0], 1e-5)
    back = ours.from_torch(module)
    for p, q in zip(layer.parameters(), back.parameters(), strict=True):
        assert torch.equal(p, q)


def test_peephole_cannot_become_torch_nn():
    with pytest.raises(ValueError, match="no peephole"):
        rnnkit.LSTM(I, H, peephole=True).to_torch()


def test_from_torch_rejects_the_wrong_type_and_projections():
    with pytest.raises(TypeError, match="expects GRU, got LSTM"):
        rnnkit.GRU.from_torch(nn.LSTM(I, H))
    with pytest.raises(ValueError, match="proj_size"):
        rnnkit.LSTM.from_torch(nn.LSTM(I, H, proj_size=2))


# -- argument checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"num_layers": 0}, ValueError, "num_layers must be a positive int, got 0"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
        ({"kernel": "fast"}, ValueError, "kernel must be one of"),
        ({"hidden_size": -2}, ValueError, "hidden_size must be a positive int, got -2"),
    ],
)
def test_constructor_checks(kwargs, error, message):
    args = {"input_size": I, "hidden_size": H, **kwargs}
    with pytest.raises(error, match=message):
        rnnkit.LSTM(**args)


def test_torch_kernel_refuses_the_peephole_cell():
    with pytest.raises(ValueError, match="no fused kernel"):
        rnnkit.LSTM(I, H, peephole=True, kernel="torch")


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda m: m(torch.randn(T, I)), ValueError, "expected a rank-3 input .* got rank 2"),
        (lambda m: m(torch.randn(T, B, I + 1)), ValueError, "expected input_size 3 .* got 4"),
        (lambda m: m(torch.ones(T, B, I, dtype=torch.long)), TypeError, "floating-point"),
        (
            lambda m: m(torch.randn(T, B, I), lengths=torch.tensor([1, 2])),
            ValueError,
            r"one entry per sequence \(4\)",
        ),
        (
            lambda m: m(torch.randn(T, B, I), lengths=torch.tensor([7, 1, 1, 1])),
            ValueError,
            r"lengths must lie in \[1, 6\].*max 7",
        ),
        (
            lambda m: m(torch.randn(T, B, I), lengths=torch.tensor([0, 1, 1, 1])),
            ValueError,
            "min 0",
        ),
        (
            lambda m: m(torch.randn(T, B, I), lengths=torch.tensor([1.0, 1, 1, 1])),
            TypeError,
            "lengths must be integers",
        ),
        (
            lambda m: m(torch.randn(T, B, I), torch.zeros(1, B, H)),
            ValueError,
            "expected a state of 2 tensor",
        ),
        (
            lambda m: m(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, 2, H))),
            ValueError,
            r"expected state of shape \(1, 4, 5\), got \(1, 2, 5\)",
        ),
        (
            lambda m: m(torch.randn(T, B, I), (torch.zeros(1, B, H, dtype=torch.float64),) * 2),
            ValueError,
            "state dtype torch.float64 does not match",
        ),
    ],
)
def test_forward_checks(call, error, message):
    with pytest.raises(error, match=message):
        call(rnnkit.LSTM(I, H))


def test_lengths_on_any_device_type_and_as_a_list():
    layer = make("lstm", "auto")
    x = torch.randn(T, B, I, dtype=torch.float64)
    a, _ = layer(x, lengths=LENGTHS)
    b, _ = layer(x, lengths=LENGTHS.tolist())
    assert torch.equal(a, b)


def test_make_layer_by_cell_name():
    assert isinstance(rnnkit.layers.make_layer("gru", I, H), rnnkit.GRU)
    assert rnnkit.layers.make_layer("peephole", I, H, num_layers=2).cells[1].peephole
    elman = rnnkit.layers.make_layer("rnn", I, H, bidirectional=True)
    assert isinstance(elman, rnnkit.RNN) and elman.bidirectional
    assert not rnnkit.layers.make_layer("lstm", I, H).cells[0].peephole
    with pytest.raises(ValueError, match="cell must be one of .* got 'elman'"):
        rnnkit.layers.make_layer("elman", I, H)
