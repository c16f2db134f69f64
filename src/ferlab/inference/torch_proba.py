"""Class probabilities of a PyTorch model for uint8 faces, with test-time augmentation.

Training's validation, `evaluate`, `predict` and the server all come through
`tta_logits_and_probs` for PyTorch models, so every one of them sees the same
preprocessing and the same TTA (`tta.tta_views` and `tta.mean_over_views`, which the
ONNX Runtime path in `classifier.py` and an ensemble's members use too). A backend only
supplies a *forward*: a function from a preprocessed float batch (N, 1, H, W) to fp32
logits (N, classes).

Depends on: preprocess, runtime, tta; torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..core.runtime import Runtime
from ..data.preprocess import Preprocessing, preprocess
from .tta import TTA_MODES, check_tta, mean_over_views, tta_views  # noqa: F401  (re-exported)

Forward = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def tta_logits_and_probs(
    forward: Forward, x: torch.Tensor, tta: str = "none"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A preprocessed batch -> (mean logits, mean probabilities) over the TTA views, fp32.
    One forward a view: the batch is already as large as memory allows."""
    return mean_over_views(forward, x, tta, one_call_rows=0)


def torch_forward(model: nn.Module, runtime: Runtime) -> Forward:
    """A PyTorch module as a forward: autocast and memory format as the runtime says."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            return model(runtime.memory_format(x)).float()

    return forward


def logits_and_probs(
    model: nn.Module, images: torch.Tensor, pp: Preprocessing, runtime: Runtime, tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of uint8 images on the device -> (mean logits, mean probabilities), fp32."""
    return tta_logits_and_probs(torch_forward(model, runtime), preprocess(images, pp), tta)


@torch.no_grad()
def batched_proba(
    forward: Forward,
    images: np.ndarray | torch.Tensor,
    pp: Preprocessing,
    num_classes: int,
    *,
    tta: str = "none",
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """uint8 faces (N, H, W) -> probabilities (N, classes) as numpy, `batch_size` at a time."""
    images = torch.as_tensor(images)
    out = [
        tta_logits_and_probs(forward, preprocess(images[i : i + batch_size].to(device), pp), tta)[1].cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, num_classes), np.float32)


def predict_proba(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    pp: Preprocessing,
    runtime: Runtime,
    *,
    tta: str = "none",
    batch_size: int = 1024,
    num_classes: int = 0,
) -> np.ndarray:
    """A PyTorch model's probabilities for uint8 faces, in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return batched_proba(torch_forward(model, runtime), images, pp, num_classes, tta=tta,
                             batch_size=batch_size, device=runtime.device)
    finally:
        model.train(was_training)
