"""Everything an epoch needs, in one object: `train_one_epoch(state, data, epoch)`.

`TrainState.create` builds the optimizer, schedule and gradient scaler for a
model (only its trainable parameters), and the module the epoch actually runs -
the model itself, or it compiled and/or wrapped for DistributedDataParallel.
Checkpoints and validation use `state.model`, the plain module.

Depends on: config, preprocess, runtime, and this package's optim and distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..core.runtime import Runtime
from ..data.preprocess import Preprocessing
from .distributed import Dist, wrap_ddp
from .optim import make_optimizer, make_scheduler


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shuffle, augmentation and dropout: a resumed run repeats them."""
    return seed * 100_003 + epoch


def epoch_steps(n: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per epoch for n images; a last batch of one image (which breaks
    BatchNorm) is dropped."""
    per_rank, per_rank_batch = n // world, max(1, batch_size // world)
    steps = math.ceil(per_rank / per_rank_batch)
    if per_rank % per_rank_batch == 1 and steps > 1:
        steps -= 1
    return max(1, steps)


@dataclass
class TrainState:
    cfg: Config
    model: nn.Module  # the plain module: checkpoints and validation
    train_model: nn.Module  # what the epoch runs: `model`, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    runtime: Runtime
    pp: Preprocessing = field(default_factory=Preprocessing)
    dist: Dist = field(default_factory=Dist)
    teacher: nn.Module | None = None  # distillation: a frozen model whose soft targets guide

    @classmethod
    def create(
        cls,
        cfg: Config,
        model: nn.Module,
        runtime: Runtime,
        *,
        total_steps: int,
        pp: Preprocessing | None = None,
        dist: Dist | None = None,
        teacher: nn.Module | None = None,
    ) -> TrainState:
        """Optimizer and schedule over `total_steps` for a model already on the device."""
        dist = dist or Dist()
        optimizer = make_optimizer(model, cfg.train)
        scheduler = make_scheduler(optimizer, cfg.train, total_steps)
        scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        train_model = torch.compile(model) if cfg.train.compile else model
        train_model = wrap_ddp(train_model, dist, runtime.device)
        return cls(cfg, model, train_model, optimizer, scheduler, scaler, runtime,
                   pp or Preprocessing(), dist, teacher)

    def load(self, ckpt: dict[str, Any], steps_done: int) -> bool:
        """Weights, optimizer and schedule from a `last.pt` (resume). Returns True when the
        schedule was rebuilt: `train.epochs` changed (a run extended), so the saved schedule
        (whose length is fixed: one-cycle's total steps) is replaced by this run's, advanced
        to the `steps_done` already taken."""
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["config"]["train"]["epochs"] == self.cfg.train.epochs:
            self.scheduler.load_state_dict(ckpt["scheduler"])
            return False
        import warnings

        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
            warnings.simplefilter("ignore")
            for _ in range(steps_done):
                self.scheduler.step()
        return True

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]
