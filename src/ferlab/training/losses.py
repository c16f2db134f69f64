"""The supervised loss for each kind of target: one label, a vote distribution, a set of answers.

* one label per face (FER2013, FER+ `majority`, `probability` after its per-epoch
  draw): cross-entropy, with `train.label_smoothing`;
* FER+ `crossentropy`: cross-entropy against the face's vote distribution (soft
  targets), smoothed the same way;
* FER+ `multi_target`: -log of the probability mass on the emotions the crowd found
  acceptable (the FER+ paper's multi-target loss): any of them counts as right.

Depends on: torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1).masked_fill(targets <= 0, float("-inf"))
    return -torch.logsumexp(log_p, dim=1).mean()


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                    mode: str = "majority", label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss against `targets` (N, K) where given (soft modes), else against `labels`."""
    if targets is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if mode == "multi_target":
        return multi_target_loss(logits, targets)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
