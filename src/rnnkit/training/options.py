"""What every run is given: :class:`TrainConfig` (the trainer's settings, which every task's
config extends), the device, the precision, and the stopping limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rnnkit.kernels import hardware


@dataclass
class TrainConfig:
    """Settings shared by every task; a task's config extends this with its own defaults."""

    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"  # update rule
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.01  # decoupled weight decay (AdamW), L2 penalty (SGD, RMSprop)
    momentum: float = 0.9  # momentum of SGD and RMSprop
    clip: float = 1.0  # clip the global gradient norm to this (0 turns clipping off)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"  # learning-rate schedule
    warmup: int = 50  # steps of linear warm-up from 0 to lr
    min_lr: float = 0.05  # cosine ends at this fraction of lr
    patience: int = 2  # plateau: evaluations without improvement before lr is cut
    factor: float = 0.5  # plateau: multiply lr by this at each cut
    steps: int = 0  # stop after this many steps (0: no limit)
    epochs: float = 0.0  # stop after this many passes over the training data (0: no limit)
    minutes: float = 0.0  # stop after this much training time (0: no limit)
    eval_every: int = 200  # evaluate on validation every this many steps
    stop_after: int = 0  # stop when validation has not improved for this many evaluations (0: no)
    checkpoint_every: int = 0  # also save last.safetensors every this many steps (0: at evals)
    seed: int = 1  # seed for initialisation, dropout and sampling order
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to train (auto: cuda if available)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16 or fp32 (auto: bf16 if native)
    out: str = ""  # run directory (default: runs/<task>-<date>-<time>)


LIMITS = ("steps", "epochs", "minutes")


def limits_given(flags: dict) -> dict:
    """``flags`` with the stopping limits the user gave replacing all of the task's default
    ones: ``--minutes 5`` on a task whose default is three epochs trains five minutes."""
    if not any(name in flags for name in LIMITS):
        return flags
    return {**dict.fromkeys(LIMITS, 0), **flags}


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def precision_of(precision: str, device: torch.device) -> tuple[bool, str]:
    """(bf16 or not, one line saying why): the user's ``--precision``, or for ``auto`` the
    hardware's answer (:func:`rnnkit.kernels.hardware.default_precision`: bf16 where it is
    native, 2-3x faster there, and float32 where it would be emulated)."""
    if precision != "auto":
        return precision == "bf16", f"{precision} (--precision {precision})"
    chosen, why = hardware.default_precision(device)
    return chosen == "bf16", why


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run of ``--precision precision`` computes in bf16 on ``device``."""
    return precision_of(precision, device)[0]


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# --- the training loop ---
