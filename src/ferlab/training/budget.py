"""Fit a run's epoch count to `train.budget_minutes` by timing a few steps on a throwaway copy.

Depends on: config, preprocess, runtime, and this package's engine, state and tensors.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from torch import nn

from ..core.config import Config
from ..core.runtime import Runtime
from ..data.preprocess import Preprocessing
from .engine import train_one_epoch, validate
from .state import TrainState
from .tensors import TrainData

PROBE_STEPS = 12
SAVE_SECONDS = 0.5  # checkpoints, history and the plot, per epoch


def fit_epochs_to_budget(
    model: nn.Module, d: TrainData, cfg: Config, runtime: Runtime, pp: Preprocessing,
    log: Callable[[str], None], teacher: nn.Module | None = None,
) -> int:
    """Epochs that fit the budget: measured train speed, validation time (with the late
    TTA's extra cost where set) and the per-epoch saving."""
    t = cfg.train
    probe = TrainState.create(cfg, copy.deepcopy(model), runtime, total_steps=1000, pp=pp, teacher=teacher)
    probe.train_model = probe.model  # time the plain module: compiling would charge its start-up
    train_one_epoch(probe, d, 0, max_steps=2)  # warm-up: the first steps pay one-off costs
    stats = train_one_epoch(probe, d, 0, max_steps=PROBE_STEPS)
    val_seconds = validation_seconds(probe.model, d, pp, runtime, t.eval_batch_size, t.tta)
    epoch_seconds = len(d.train_labels) / stats["train_images_per_s"] + val_seconds + SAVE_SECONDS
    budget = t.budget_minutes * 60
    if t.late_tta_epochs:
        late_seconds = validation_seconds(probe.model, d, pp, runtime, t.eval_batch_size, t.late_tta)
        late_extra = late_seconds - val_seconds
        budget -= t.late_tta_epochs * max(0.0, late_extra)
    epochs = max(1, int(budget / epoch_seconds))
    log(f"budget {t.budget_minutes:g} min: ~{epoch_seconds:.1f} s per epoch -> {epochs} epochs"
        + (f" (the last {t.late_tta_epochs} validated with {t.late_tta} TTA)" if t.late_tta_epochs else ""))
    return epochs


def validation_seconds(model: nn.Module, d: TrainData, pp: Preprocessing, runtime: Runtime,
                       batch_size: int, tta: str) -> float:
    """Seconds for one validation pass with `tta`, timed on up to 1,024 images and scaled."""
    n = min(len(d.val_labels), 1024)
    start = time.perf_counter()
    validate(model, d.val_images[:n], d.val_labels[:n], pp, runtime, batch_size, tta)
    return (time.perf_counter() - start) * len(d.val_labels) / max(1, n)
