"""Gradient flow: the lecture's scalar figures exactly, and a small cell worked out by hand."""

import json

import torch

from rnnkit.cells import LSTMCell, RNNCell
from rnnkit.tools import gradflow


def test_scalar_linear_unit_gives_2_to_the_100_and_its_inverse_exactly():
    assert gradflow.scalar_gradient(2.0, 100) == 2.0**100 == 1267650600228229401496703205376
    assert gradflow.scalar_gradient(0.5, 100) == 0.5**100
    assert gradflow.scalar_gradient(1.0, 100) == 1.0


def test_one_unit_tanh_rnn_against_the_chain_rule_by_hand():
    torch.manual_seed(0)
    cell = RNNCell(1, 1).double()
    with torch.no_grad():
        cell.weight_hh.fill_(1.5)
        cell.weight_ih.fill_(0.7)
        cell.bias_ih.fill_(0.1)
    T = 12
    curve = gradflow.state_gradients(cell, T, batch=1, seed=3)
    # Re-run the forward with the same inputs: dh_T/dh_t = prod_{k>t} w (1 - h_k^2).
    x = torch.randn(T, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h, hs = torch.zeros(1, 1, dtype=torch.float64), []
    for t in range(T):
        h = torch.tanh(0.7 * x[t] + 0.1 + 1.5 * h)
        hs.append(h.item())
    want = [1.0]
    for h_k in reversed(hs):
        want.insert(0, want[0] * 1.5 * (1 - h_k**2))
    torch.testing.assert_close(curve, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def test_scaled_recurrent_weights_and_clipping_bound_the_state_gradient():
    cell = gradflow.scaled_cell("rnn", 8, 3.0)
    assert torch.allclose(cell.weight_hh @ cell.weight_hh.T, 9 * torch.eye(8), atol=1e-4)
    free = gradflow.state_gradients(cell, 30)
    clipped = gradflow.state_gradients(gradflow.scaled_cell("rnn", 8, 3.0), 30, clip=0.5)
    assert torch.all(clipped[:-1] <= 0.5 + 1e-12)
    assert free.max() > 0.5  # without clipping it does exceed the bound


def test_lstm_curve_covers_the_initial_state_and_every_step():
    curve = gradflow.state_gradients(LSTMCell(4, 4), 7)
    assert curve.shape == (8,) and torch.isclose(curve[-1], torch.tensor(1.0, dtype=torch.float64))
    assert torch.all(curve > 0)


def test_command_prints_figures_writes_plot_and_json(tmp_path, capsys):
    out, js = tmp_path / "g.png", tmp_path / "g.json"
    code = gradflow.main(
        [
            "--cells",
            "rnn,gru",
            "--length",
            "10",
            "--scale",
            "0.5,2",
            "--hidden",
            "4",
            "--out",
            str(out),
            "--json",
            str(js),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "w=2: dh_10/dh_0 = 1024 (w^10 = 1024)" in text
    curves = json.loads(js.read_text())
    assert set(curves["no clipping"]) == {"rnn@0.5", "rnn@2", "gru@0.5", "gru@2"}
    assert all(len(c) == 11 for c in curves["no clipping"].values())


def test_trained_run_curves_per_layer(charlm_run):
    curves = gradflow.measure_run(charlm_run, length=12, batch=3)
    assert list(curves) == ["lstm layer 0", "lstm layer 1"]
    assert all(len(c) == 13 and abs(c[-1] - 1.0) < 1e-9 for c in curves.values())
