"""rnnkit: recurrent neural networks as the lectures teach them, on PyTorch."""

from rnnkit import keras
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.keras import SimpleRNN
from rnnkit.layers import GRU, LSTM, RNN, detach_state
from rnnkit.stream import Stream
from rnnkit.summary import summary

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "SimpleRNN",
    "Stream",
    "detach_state",
    "keras",
    "summary",
]
