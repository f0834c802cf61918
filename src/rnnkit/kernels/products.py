"""The input projection of the fused paths, W_ih x_t + b for all steps at once, on the product
backend timed fastest on this machine.

In float32 the candidates are torch's ``linear`` (MKL's sgemm in torch's CPU build) and
oneDNN's packed product (``torch.ops.mkldnn._linear_pointwise``, the weight reordered first).
On an AMD EPYC (Zen 3) oneDNN's was 7-18% faster for (T B, H) @ (H, 4H) at H = 128 to 512,
reorder included (side by side, 2026-12-07); on an Intel CPU MKL may win. So the choice is
timed per shape by :data:`rnnkit.kernels.autotune.TUNER` and cached with its kernel choices;
with tuning off, under ``RNNKIT_HARDWARE=generic`` and without oneDNN, torch's ``linear``
runs, the twin the other is tested against.

Shape letters: N rows (steps x batch), K inputs, M outputs.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.kernels import autotune
from rnnkit.kernels.common import mixed_linear
from rnnkit.kernels.hardware import generic


def onednn_linear(a: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """a @ weight.T + bias in oneDNN, the weight reordered for it first (a copy of K M)."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, a.shape[0])
    return torch.ops.mkldnn._linear_pointwise(a, packed, bias, "none", [], "")


def projection(a: Tensor, weight: Tensor, low_precision: bool, bias: Tensor | None = None):
    """:func:`rnnkit.kernels.common.mixed_linear`, float32's product on :func:`backend`'s
    choice: (N, K) @ (K, M) + (M,) -> (N, M)."""
    if low_precision or backend(a, weight) == "torch":
        return mixed_linear(a, weight, low_precision, bias)
    return onednn_linear(a, weight.detach(), bias)


def backend(a: Tensor, weight: Tensor) -> str:
    """ "onednn" where it was timed faster than torch's linear for this shape (rows rounded
    up to a power of two) on this machine, else "torch"."""
    usable = a.dtype == weight.dtype == torch.float32 and a.device.type == "cpu"
    if not usable or generic() or not autotune.enabled() or not torch.backends.mkldnn.enabled:
        return "torch"
    rows, (outputs, inputs) = autotune.bucket(a.shape[0]), weight.shape
    key = f"linear N{rows} K{inputs} M{outputs} threads{torch.get_num_threads()}"
    timing = lambda: _timed(rows, inputs, outputs)  # noqa: E731
    return autotune.TUNER.entry(key, ("torch", "onednn"), timing)["kernel"]


def _timed(rows: int, inputs: int, outputs: int) -> dict[str, float]:
    """Fewest seconds of each backend's product on random operands of this shape, in turn
    (a backend that fails here, a torch without oneDNN say, is no candidate)."""
    with torch.random.fork_rng(devices=[]):  # the user's random stream stays as it was
        a, weight = torch.randn(rows, inputs), torch.randn(outputs, inputs)
    runs = {"torch": lambda: functional.linear(a, weight)}
    runs["onednn"] = lambda: onednn_linear(a, weight)
    try:
        runs["onednn"]()
    except (AttributeError, RuntimeError):
        return {"torch": 0.0}
    times: dict[str, float] = {}
    for _ in range(autotune.MIN_ROUNDS + 1):  # the first round warms up
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    return times
