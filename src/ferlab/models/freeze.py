"""Frozen layers: helpers shared by transfer-learning bases and `train.finetune`.

Depends on: torch.
"""

from __future__ import annotations

from torch import nn


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in eval mode (call after .train()).

    Like Keras' `trainable=False`: a frozen BatchNorm also keeps its running
    statistics, so a frozen base computes exactly what it computed before.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()
