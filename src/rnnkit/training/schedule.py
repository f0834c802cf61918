"""The optimiser a run names and its learning-rate schedule: linear warm-up, then cosine
decay to ``min_lr`` over the run's first limit, or a scale the trainer lowers on plateaus."""

from __future__ import annotations

import math

import torch


def make_optimizer(config, params) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.RMSprop(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


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
