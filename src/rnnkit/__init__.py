"""rnnkit: recurrent neural networks as the lectures teach them, on PyTorch."""

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.layers import GRU, LSTM, RNN, detach_state

__version__ = "0.1.0"

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "detach_state"]
