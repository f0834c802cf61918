"""The optimiser a run names and its learning-rate schedule: linear warm-up, then cosine
decay to ``min_lr`` over the run's first limit, or a scale the trainer lowers on plateaus."""

from __future__ import annotations

import math

import torch


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """The run's optimiser. AdamW and SGD update every weight in one fused kernel (torch's
    ``fused=True``, on the CPU as on CUDA) where they can: torch's default on the CPU is a
    Python loop over the weights, and on a 2-core AMD EPYC an AdamW step over a text
    classifier's 1.3 M weights took 5.8 ms in it against 1.1 ms fused, 1 thread, idle machine
    (``benchmarks/optimizer_step.py``). Under several processes every process takes the
    whole step, so its cost is not divided: it bounds how much a second process can gain."""
    params = list(params)
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    fused = fused or None  # None: torch's own choice
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            fused=fused,
        )  # fmt: skip
    return torch.optim.RMSprop(  # no fused RMSprop in torch: its loop over lists of weights
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        foreach=True,
    )  # fmt: skip


def lr_factor(config, step: int, progress: float, plateau_scale: float) -> float:
    """Learning rate as a fraction of ``config.lr``: linear warm-up, then the schedule.

    ``progress`` in [0, 1] is how far the run is towards its first stopping limit (steps,
    epochs or minutes), so the cosine reaches ``min_lr`` when the run stops.
    """
    warm = min(1.0, (step + 1) / config.warmup) if config.warmup > 0 else 1.0
    if config.schedule == "cosine":
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return warm * (config.min_lr + (1.0 - config.min_lr) * cosine)
    if config.schedule == "plateau":
        return warm * plateau_scale
    return warm
