"""Optimizers and learning-rate schedules, each a table keyed by its config name.

Depends on: config (its error type); torch. `t` is the config's `train` section (`config.TrainConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.config import ConfigError

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay),
    "adamw": lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay),
    "sgd": lambda p, t: torch.optim.SGD(
        p, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    ),
}


def _cosine(t, total: int) -> Callable[[int], float]:
    warm = max(1, int(t.warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


# Per-step schedules, keyed by `train.scheduler`; each gets (optimizer, train cfg, total steps).
SCHEDULERS: dict[str, Callable[..., Any]] = {
    "none": lambda o, t, n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0),
    "onecycle": lambda o, t, n: _onecycle(o, t, n),
    "cosine": lambda o, t, n: torch.optim.lr_scheduler.LambdaLR(o, _cosine(t, n)),
}


def _onecycle(optimizer: torch.optim.Optimizer, t, n: int) -> Any:
    """torch's one-cycle schedule, kept defined on runs of a few steps (a few dozen faces for
    a few epochs): its warm-up must span at least two steps and end before the last, else
    it divides by zero. Under three steps the learning rate stays at train.lr."""
    if n < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    pct = min(max(t.warmup_fraction, 2 / n), (n - 1) / n)
    peaks = [t.lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]  # layer-wise rates
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=n, pct_start=pct)


def make_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    # Frozen parameters (transfer learning, train.finetune) stay out of the optimizer.
    return OPTIMIZERS[t.optimizer](param_groups(model, t), t)


def param_groups(model: nn.Module, t) -> list[dict[str, Any]]:
    """The trainable parameters, in one group, or with `train.layer_decay` < 1 one group per
    depth below the head, each at lr x decay^depth (a pretrained base's early, general stages
    move less than its late ones and the new head)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if t.layer_decay == 1.0:
        return [{"params": trainable}]
    if not hasattr(model, "param_depths"):
        raise ConfigError("train.layer_decay needs a model with pretrained stages (a *_transfer model); "
                          f"{type(model).__name__} has none")
    depths = model.param_depths()
    groups: dict[int, list[nn.Parameter]] = {}
    for p in trainable:
        groups.setdefault(depths[p], []).append(p)
    return [{"params": params, "lr": t.lr * t.layer_decay ** depth, "lr_scale": t.layer_decay ** depth}
            for depth, params in sorted(groups.items())]


def make_scheduler(optimizer: torch.optim.Optimizer, t, total_steps: int):
    if t.scheduler not in SCHEDULERS:
        raise ConfigError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got {t.scheduler!r}")
    return SCHEDULERS[t.scheduler](optimizer, t, max(1, total_steps))
