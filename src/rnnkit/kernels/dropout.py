"""Dropout with a hashed mask: :class:`Dropout`, a drop-in for ``torch.nn.Dropout``.

Inverted dropout (Srivastava et al. 2014, as torch.nn.Dropout): in training each element
is zeroed with probability p and the rest are scaled by 1 / (1 - p); in evaluation the
input passes unchanged. What differs is where the mask comes from. torch draws it from
its Mersenne Twister one element at a time, which on this machine's CPU costs 25 to 40 ms
for the (64, 128, 384) output of a character model, against a training step of about
100 ms (docs/benchmarks.md). Here element i of a contiguous tensor is kept when a hash of
(seed, i) is at least p * 2^32 (``csrc/dropout.c``), so the mask costs one pass over memory
and is never stored: the backward draws it again from the same seed. The seed itself
comes from torch's default generator, so ``torch.manual_seed`` and a saved RNG state
reproduce a run as before.

:func:`reference_keep` computes the same hash with torch's integer operations: it is the
slow twin the C code is tested against, and the path on devices other than the CPU, for
dtypes other than float32 and bfloat16, and wherever the C library cannot be built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.kernels import compiled

LOW_32 = 0xFFFFFFFF


def _multiply_low_32(h: Tensor, constant: int) -> Tensor:
    """(h * constant) mod 2^32 for h in [0, 2^32), without overflowing int64."""
    high, low = constant >> 16, constant & 0xFFFF
    return (h * low + (((h * high) & 0xFFFF) << 16)) & LOW_32


def _mix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser, as mix32 in csrc/dropout.c."""
    h = h ^ (h >> 16)
    h = _multiply_low_32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _multiply_low_32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def reference_keep(count: int, seed: int, p: float, device=None) -> Tensor:
    """The mask of ``csrc/dropout.c`` in torch integer operations: (count,) bool, True: kept."""
    index = torch.arange(count, dtype=torch.int64, device=device)
    h = _mix32((index + (seed & LOW_32)) & LOW_32)
    h = _mix32(h ^ ((seed >> 32) & LOW_32))
    return h >= _threshold(p)


def _threshold(p: float) -> int:
    return min(int(round(p * 2**32)), LOW_32)


_C_TYPES = {torch.float32: "dropout_f32", torch.bfloat16: "dropout_bf16"}


def _c_function(x: Tensor):
    """The C entry point for x, or None where the reference path runs."""
    if x.device.type != "cpu" or x.dtype not in _C_TYPES or x.numel() > LOW_32:
        return None
    lib = compiled.library()
    return None if lib is None else getattr(lib, _C_TYPES[x.dtype])


def apply_mask(x: Tensor, p: float, seed: int) -> Tensor:
    """x with the mask of (seed, p) applied and the kept elements scaled by 1 / (1 - p)."""
    x = x.contiguous()
    scale = 1.0 / (1.0 - p)
    function = _c_function(x)
    if function is None:
        keep = reference_keep(x.numel(), seed, p, x.device).view(x.shape)
        return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))
    out = torch.empty_like(x)
    function(n=x.numel(), seed=seed, threshold=_threshold(p), scale=scale, x=x, out=out)
    return out


class HashedDropout(torch.autograd.Function):
    """Forward and backward apply the same hashed mask; nothing is saved but the seed."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return apply_mask(x, p, seed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return apply_mask(grad, ctx.p, ctx.seed), None, None


def draw_seed() -> int:
    """A 63-bit seed from torch's default generator (so torch.manual_seed governs it)."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def check_probability(p: float) -> float:
    """p as a float, or a ValueError that says what was expected."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    return float(p)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``torch.nn.functional.dropout`` with the hashed mask (module docstring)."""
    check_probability(p)
    if not training or p == 0.0:
        return x
    return HashedDropout.apply(x, p, draw_seed())


class Dropout(nn.Module):
    """``torch.nn.Dropout(p)`` with the hashed mask: same rule, same scaling, a cheap mask."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_probability(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
