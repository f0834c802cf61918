"""The compiled single step behind :class:`rnnkit.Stream`: its library and its layout.

``csrc/step.c`` runs one time step of a whole stack of layers (and the head) in one call.
:mod:`rnnkit.kernels.compiled` builds it with the rest of ``csrc/``; when that cannot be
done, :func:`library` returns None and the stream takes its torch path, the slow twin this
code is tested against. Everything here is plumbing; the math is in the C file's comment
and in :mod:`rnnkit.cells`.

Shape letters: K inputs of a matrix, N its rows (outputs), P the panel width.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from rnnkit.kernels import compiled

PANEL = 64  # outputs per weight panel; must equal PANEL in step.c
KINDS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}

_pointer = ctypes.c_void_p


class Stack(ctypes.Structure):
    """Mirror of ``Stack`` in step.c: sizes, then pointers into tensors Python keeps alive."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("layers", ctypes.c_int32),
        ("batch", ctypes.c_int32),
        ("input_size", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("gate_rows", ctypes.c_int32),
        ("head_size", ctypes.c_int32),
        ("padding", ctypes.c_int32),
        ("vocab", ctypes.c_int64),
        ("table", _pointer),
        ("embedding", _pointer),
        ("w_ih", _pointer),
        ("w_hh", _pointer),
        ("b_ih", _pointer),
        ("b_hh", _pointer),
        ("peep", _pointer),
        ("head_w", _pointer),
        ("head_b", _pointer),
        ("h", _pointer),
        ("c", _pointer),
        ("gx", _pointer),
        ("gh", _pointer),
        ("out", _pointer),
        ("tokens", _pointer),
    ]


def library():
    """``step(stack, x)``, the library's ``rnnkit_stream_step`` (its two arguments, the address
    of a :class:`Stack` and of the input row or None, passed in order: the stream calls it at
    every token), or None when the library cannot be built."""
    lib = compiled.library()
    return None if lib is None else lib.rnnkit_stream_step.function


def matvec_threads(weights: int) -> int:
    """How many threads the compiled step splits its matrices over when it reads ``weights``
    weights in all (step.c, PARALLEL_WEIGHTS): torch's thread count for large stacks, else
    1; 1 without a library built with OpenMP."""
    lib = compiled.library()
    return 1 if lib is None else lib.rnnkit_matvec_threads(weights=weights)


# --- layout ---------------------------------------------------------------------------------


def panels(weight: Tensor) -> Tensor:
    """(N, K) -> (ceil(N / P), K, P) float32: column j of panel p is row p * P + j.

    A matrix-vector product then reads the weights front to back, P outputs at a time.
    """
    rows, inputs = weight.shape
    padded = torch.zeros(padded_size(rows), inputs, dtype=torch.float32)
    padded[:rows] = weight.detach().float()
    return padded.view(-1, PANEL, inputs).transpose(1, 2).contiguous()  # (N/P, K, P)


def padded_vector(vector: Tensor | None, size: int) -> Tensor:
    """A bias as the C side reads it: float32, zero-padded to whole panels (zeros if None)."""
    out = torch.zeros(padded_size(size), dtype=torch.float32)
    if vector is not None:
        out[:size] = vector.detach().float()
    return out


def padded_size(rows: int) -> int:
    return -(-rows // PANEL) * PANEL


def pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def pointer_array(tensors) -> ctypes.Array:
    return (_pointer * len(tensors))(*(pointer(t) for t in tensors))
