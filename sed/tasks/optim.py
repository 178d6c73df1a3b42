"""Optimisers and learning-rate schedules of the published recipes, as one per-step factor.

- ``multistep`` (AST): ``MultiStepLR(milestones=range(start, 1000, step), gamma)`` stepped per epoch.
- ``cosine`` (Patch-Mix): for epoch e = 1..E, ``lr_e = eta_min + (lr - eta_min)(1 + cos(pi e / E)) / 2``
  with ``eta_min = lr * min_lr_ratio`` (the reference sets it at the start of each epoch).
- ``none``: constant.
- ``warmup_steps`` (AST): for global step s <= warmup, lr = (50 floor(s / 50) / warmup) * lr, i.e.
  raised every 50 steps as the reference does; composed with the epoch schedule.

Everything is a single ``LambdaLR`` stepped every optimisation step, so the factor is exact
whatever the number of steps per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def build_optimizer(
    params: Iterable,
    name: str = "adam",
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check the transfer mode)")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def epoch_factor(
    epoch: int,
    schedule: str,
    max_epochs: int,
    start: int = 5,
    step: int = 1,
    gamma: float = 0.85,
    min_lr_ratio: float = 1e-3,
) -> float:
    """Learning-rate multiplier during 0-based ``epoch``."""
    if schedule == "none":
        return 1.0
    if schedule == "multistep":
        return gamma ** sum(1 for m in range(start, 1000, step) if m <= epoch)
    if schedule == "cosine":
        e = epoch + 1
        return min_lr_ratio + (1 - min_lr_ratio) * (1 + math.cos(math.pi * e / max(max_epochs, 1))) / 2
    raise ValueError(f"unknown scheduler {schedule!r}; use none, multistep or cosine")


def warmup_factor(step: int, warmup_steps: int) -> float:
    if warmup_steps <= 0 or step > warmup_steps:
        return 1.0
    return (step // 50 * 50) / warmup_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_steps: int = 0,
    **kwargs,
) -> torch.optim.lr_scheduler.LambdaLR:
    steps_per_epoch = max(1, int(steps_per_epoch))
    epoch_factor(0, schedule, max_epochs, **kwargs)  # validate the name early

    def factor(step: int) -> float:
        return warmup_factor(step, warmup_steps) * epoch_factor(
            step // steps_per_epoch, schedule, max_epochs, **kwargs
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
