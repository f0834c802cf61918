"""Keras-style layers: one documented return type per flag combination."""

import pytest
import torch

import rnnkit

B, T, F, H = 3, 5, 4, 6


@pytest.mark.parametrize(
    "cls,parts", [(rnnkit.SimpleRNN, 1), (rnnkit.keras.GRU, 1), (rnnkit.keras.LSTM, 2)]
)
def test_return_types_by_flag(cls, parts):
    x = torch.randn(B, T, F)
    torch.manual_seed(0)
    last = cls(H)(x)
    torch.manual_seed(0)
    seq = cls(H, return_sequences=True)(x)
    torch.manual_seed(0)
    with_state = cls(H, return_state=True)(x)
    torch.manual_seed(0)
    seq_state = cls(H, return_sequences=True, return_state=True)(x)
    assert last.shape == (B, H) and seq.shape == (B, T, H)
    assert isinstance(with_state, tuple) and len(with_state) == 1 + parts
    assert all(s.shape == (B, H) for s in with_state)
    assert seq_state[0].shape == (B, T, H) and len(seq_state) == 1 + parts
    # The last output is the last step of the sequence and the state h.
    torch.testing.assert_close(last, seq[:, -1])
    torch.testing.assert_close(with_state[1], last)
    torch.testing.assert_close(seq_state[1], seq[:, -1])


def test_simple_rnn_is_the_elman_rnn_with_its_activation():
    torch.manual_seed(1)
    layer = rnnkit.SimpleRNN(H, activation="relu", return_sequences=True, input_size=F)
    ref = torch.nn.RNN(F, H, nonlinearity="relu", batch_first=True)
    ref.load_state_dict(
        {k[: -len("_l0")] + "_l0": v for k, v in layer.rnn.to_torch().state_dict().items()}
    )
    x = torch.randn(B, T, F)
    torch.testing.assert_close(layer(x), ref(x)[0])


def test_lazy_build_takes_features_dtype_from_the_first_call():
    layer = rnnkit.SimpleRNN(H)
    assert layer.rnn is None and not list(layer.parameters())
    out = layer(torch.randn(B, T, F, dtype=torch.float64))
    assert out.dtype == torch.float64 and layer.rnn.input_size == F


def test_last_output_with_lengths_is_at_each_last_real_step():
    layer = rnnkit.keras.LSTM(H, input_size=F)
    x = torch.randn(B, T, F)
    lengths = torch.tensor([5, 2, 3])
    last = layer(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(last[b : b + 1], layer(x[b : b + 1, :n]))


def test_initial_state_as_keras_gives_it():
    layer = rnnkit.keras.LSTM(H, input_size=F, return_state=True)
    x = torch.randn(B, T, F)
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    _, h, c = layer(x, initial_state=[h0, c0])
    _, (h_ref, c_ref) = layer.rnn(x, (h0[None], c0[None]))
    torch.testing.assert_close(h, h_ref[0])
    torch.testing.assert_close(c, c_ref[0])


def test_activation_check():
    with pytest.raises(ValueError, match=r"SimpleRNN supports activation in \('tanh', 'relu'\)"):
        rnnkit.SimpleRNN(H, activation="sigmoid")
    with pytest.raises(ValueError, match="LSTM supports activation in"):
        rnnkit.keras.LSTM(H, activation="relu")
