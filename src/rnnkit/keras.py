"""Keras-style recurrent layers, for readers of ``tf.keras.layers.SimpleRNN(units, ...)``.

Inputs are batch-major (B, T, F) as in Keras. ``input_size`` may be left out: the layer is
then built on its first call, from the last dimension of the input (create the optimiser
after that call, or pass ``input_size``).

What a call returns, by flag (H = ``units``):

====================  ============  =============================================
return_sequences      return_state  returns
====================  ============  =============================================
False (default)       False         the last output, (B, H)
True                  False         every output, (B, T, H)
False or True         True          a tuple (output, h) for SimpleRNN and GRU,
                                    (output, h, c) for LSTM; h and c are (B, H)
====================  ============  =============================================

With ``lengths``, "last" means each sequence's last real step, as Keras' masking has it.
Keras' GRU defaults to ``reset_after=True``, which is the variant rnnkit.GRU computes.

Shape letters: B batch, T time, F features, H units.
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit import layers


class KerasRecurrent(nn.Module):
    layer_type: type = layers.RNN
    activations: tuple[str, ...] = ("tanh",)

    def __init__(
        self,
        units: int,
        activation: str = "tanh",
        return_sequences: bool = False,
        return_state: bool = False,
        input_size: int | None = None,
        **options,
    ):
        super().__init__()
        if activation not in self.activations:
            raise ValueError(
                f"{type(self).__name__} supports activation in "
                f"{self.activations}, got {activation!r}"
            )
        self.units, self.activation = units, activation
        self.return_sequences, self.return_state = return_sequences, return_state
        self.options = options
        self.rnn = None
        if input_size is not None:
            self._build(input_size)

    def _build(self, input_size: int, device=None, dtype=None) -> None:
        self.rnn = self.layer_type(
            input_size, self.units, batch_first=True, **self._layer_options(), **self.options
        )
        self.rnn.to(device=device, dtype=dtype)

    def _layer_options(self) -> dict:
        return {}

    def forward(self, x: Tensor, initial_state=None, lengths=None):
        if self.rnn is None:
            if not isinstance(x, Tensor) or x.dim() != 3:
                raise ValueError(f"{type(self).__name__} expected (batch, time, features)")
            self._build(x.shape[-1], x.device, x.dtype)
        state = None
        if initial_state is not None:  # Keras gives states as (B, H) tensors
            parts = initial_state if isinstance(initial_state, tuple | list) else (initial_state,)
            state = tuple(s.unsqueeze(0) for s in parts)
            state = state if len(state) == 2 else state[0]
        output, final = self.rnn(x, state, lengths)
        parts = final if isinstance(final, tuple) else (final,)
        last = tuple(p[-1] for p in parts)  # (B, H): the top layer's state
        result = output if self.return_sequences else last[0]
        return (result, *last) if self.return_state else result


class SimpleRNN(KerasRecurrent):
    """``SimpleRNN(units, activation="tanh"|"relu", return_sequences, return_state)``."""

    layer_type, activations = layers.RNN, ("tanh", "relu")

    def _layer_options(self) -> dict:
        return {"nonlinearity": self.activation}


class LSTM(KerasRecurrent):
    """``LSTM(units, return_sequences, return_state)``; returns (output, h, c) with state."""

    layer_type = layers.LSTM


class GRU(KerasRecurrent):
    """``GRU(units, return_sequences, return_state)``, Keras' ``reset_after=True`` form."""

    layer_type = layers.GRU


__all__ = ["GRU", "LSTM", "SimpleRNN"]
