"""Each cell against its equations written out by hand, and its initialisation."""

import pytest
import torch
from torch import nn

import rnnkit

B, I, H = 3, 4, 5


def sigmoid(v):
    return 1.0 / (1.0 + torch.exp(-v))


def peephole_by_hand(cell, xs, h, c):
    """Gers and Schmidhuber (2000), unrolled from the equations, one unit at a time."""
    W, U = cell.weight_ih, cell.weight_hh
    b = cell.bias_ih + cell.bias_hh
    outputs = []
    for x in xs:
        h_new, c_new = torch.empty_like(h), torch.empty_like(c)
        for k in range(H):  # unit k, gate rows k, H+k, 2H+k, 3H+k (order i, f, g, o)

            def pre(gate, k=k, x=x, h=h):
                row = gate * H + k
                return (W[row] * x).sum(-1) + (U[row] * h).sum(-1) + b[row]

            i = sigmoid(pre(0) + cell.weight_ci[k] * c[:, k])
            f = sigmoid(pre(1) + cell.weight_cf[k] * c[:, k])
            g = torch.tanh(pre(2))
            c_new[:, k] = f * c[:, k] + i * g
            o = sigmoid(pre(3) + cell.weight_co[k] * c_new[:, k])
            h_new[:, k] = o * torch.tanh(c_new[:, k])
        h, c = h_new, c_new
        outputs.append(h)
    return torch.stack(outputs), h, c


def test_peephole_lstm_equals_the_hand_unrolled_equations():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, peephole=True).double()
    cell = layer.cells[0]
    with torch.no_grad():
        for p in (cell.weight_ci, cell.weight_cf, cell.weight_co, cell.bias_hh):
            p.uniform_(-1, 1)
    xs = torch.randn(7, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    want_out, want_h, want_c = peephole_by_hand(cell, xs, h0, c0)
    for kernel in ("loop", "bptt"):
        layer.kernel = kernel
        out, (h, c) = layer(xs, (h0[None], c0[None]))
        torch.testing.assert_close(out, want_out, atol=1e-12, rtol=0)
        torch.testing.assert_close(h[0], want_h, atol=1e-12, rtol=0)
        torch.testing.assert_close(c[0], want_c, atol=1e-12, rtol=0)


def test_peephole_with_zero_peepholes_is_the_standard_lstm():
    torch.manual_seed(1)
    peephole = rnnkit.LSTMCell(I, H, peephole=True)
    standard = rnnkit.LSTMCell(I, H)
    standard.load_state_dict(
        {k: v for k, v in peephole.state_dict().items() if not k.startswith("weight_c")}
    )
    x, state = torch.randn(B, I), standard.init_state(B)
    torch.testing.assert_close(peephole(x, state)[1], standard(x, state)[1])


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        (rnnkit.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
        (rnnkit.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
        (rnnkit.LSTMCell, nn.LSTMCell, {}),
        (rnnkit.GRUCell, nn.GRUCell, {}),
    ],
)
def test_one_step_equals_torch_nn_cell(ours, theirs, kwargs):
    torch.manual_seed(2)
    ref = theirs(I, H, **kwargs).double()
    cell = ours(I, H, **kwargs).double()
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    state = cell.init_state(B)
    h, new_state = cell(x, state)
    want = ref(x, state)
    want_h = want[0] if isinstance(want, tuple) else want
    torch.testing.assert_close(h, want_h, atol=1e-12, rtol=0)
    for a, b in zip(
        new_state if isinstance(new_state, tuple) else (new_state,),
        want if isinstance(want, tuple) else (want,),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_state_contract_and_zero_initial_state():
    for cell in (rnnkit.RNNCell(I, H), rnnkit.GRUCell(I, H)):
        s0 = cell.init_state(B)
        assert s0.shape == (B, H) and torch.all(s0 == 0)
        h, s1 = cell(torch.randn(B, I), s0)
        assert h is s1
    lstm = rnnkit.LSTMCell(I, H)
    h0, c0 = lstm.init_state(B)
    assert h0.shape == c0.shape == (B, H) and not torch.any(h0) and not torch.any(c0)
    h, (h1, c1) = lstm(torch.randn(B, I), (h0, c0))
    assert h is h1 and c1.shape == (B, H)


def test_initialisation_orthogonal_recurrent_and_forget_bias_one():
    torch.manual_seed(3)
    cell = rnnkit.LSTMCell(I, H)
    for block in cell.weight_hh.chunk(4, 0):
        torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0)
    total_bias = cell.bias_ih + cell.bias_hh
    assert torch.all(total_bias[H : 2 * H] == 1.0)
    assert torch.all(total_bias[:H] == 0) and torch.all(total_bias[2 * H :] == 0)
    custom = rnnkit.LSTMCell(I, H, forget_bias=2.0, recurrent_init="uniform", input_init="uniform")
    bound = 1 / H**0.5
    assert torch.all(custom.weight_hh.abs() <= bound) and torch.all(custom.weight_ih.abs() <= bound)
    assert torch.all(custom.bias_ih[H : 2 * H] == 2.0)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: rnnkit.RNNCell(0, H), "input_size must be a positive int, got 0"),
        (lambda: rnnkit.GRUCell(I, 2.5), "hidden_size must be a positive int, got 2.5"),
        (lambda: rnnkit.RNNCell(I, H, nonlinearity="sigmoid"), "'tanh' or 'relu', got 'sigmoid'"),
        (lambda: rnnkit.LSTMCell(I, H, recurrent_init="eye"), "recurrent_init must be one of"),
        (lambda: rnnkit.LSTMCell(I, H, input_init="he"), "input_init must be one of"),
    ],
)
def test_constructor_checks(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_step_checks_name_the_expected_shape():
    cell = rnnkit.GRUCell(I, H)
    with pytest.raises(ValueError, match=r"expected x_t of shape \(batch, 4\), got \(3, 7\)"):
        cell(torch.randn(B, 7), cell.init_state(B))
    with pytest.raises(ValueError, match=r"expected a state of shape \(3, 5\), got \(2, 5\)"):
        cell(torch.randn(B, I), cell.init_state(2))


def test_lstm_step_checks_the_cell_state_too():
    cell = rnnkit.LSTMCell(I, H)
    h0, _ = cell.init_state(B)
    with pytest.raises(ValueError, match=r"expected a state of shape \(3, 5\), got \(1, 5\)"):
        cell(torch.randn(B, I), (h0, torch.zeros(1, H)))


def test_trace_returns_the_step_and_the_named_gates():
    torch.manual_seed(4)
    x = torch.randn(B, I)
    lstm = rnnkit.LSTMCell(I, H)
    h, (h1, c1), gates = lstm.trace(x, lstm.init_state(B))
    assert set(gates) == {"input_gate", "forget_gate", "output_gate"}
    # With c_prev = 0: c = i * g and h = o * tanh(c), so o is recovered from h and c.
    torch.testing.assert_close(h, gates["output_gate"] * torch.tanh(c1))
    assert torch.equal(lstm(x, lstm.init_state(B))[0], h)
    gru = rnnkit.GRUCell(I, H)
    _, _, gates = gru.trace(x, gru.init_state(B))
    assert set(gates) == {"reset_gate", "update_gate"}
    assert all(torch.all((g > 0) & (g < 1)) for g in gates.values())
    assert rnnkit.RNNCell(I, H).trace(x, torch.zeros(B, H))[2] == {}
