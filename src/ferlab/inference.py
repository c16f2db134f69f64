"""Batched class probabilities from uint8 faces, with optional test-time augmentation.

Used by validation during training, `evaluate`, `predict` and the server, so all
of them see the same preprocessing and the same TTA.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .preprocess import Preprocessing, preprocess
from .runtime import Runtime

TTA_MODES = ("none", "flip", "tencrop")
TENCROP_FRACTION = 0.9  # crop side as a share of the image; each crop is resized back


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Views of a preprocessed batch (N, C, H, W) whose predictions are averaged."""
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode == "tencrop":
        h, w = x.shape[-2:]
        ch, cw = round(h * TENCROP_FRACTION), round(w * TENCROP_FRACTION)
        tops, lefts = (0, 0, h - ch, h - ch, (h - ch) // 2), (0, w - cw, 0, w - cw, (w - cw) // 2)
        crops = [
            F.interpolate(x[..., t : t + ch, lft : lft + cw], size=(h, w), mode="bilinear",
                          align_corners=False)
            for t, lft in zip(tops, lefts)
        ]
        return crops + [c.flip(-1) for c in crops]
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")


@torch.no_grad()
def logits_and_probs(
    model: nn.Module,
    images: torch.Tensor,
    pp: Preprocessing,
    runtime: Runtime,
    tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of uint8 images on the device -> (mean logits, mean probabilities), fp32."""
    x = preprocess(images, pp)
    logits, probs = 0.0, 0.0
    views = tta_views(x, tta)
    for view in views:
        with runtime.autocast():
            out = model(runtime.memory_format(view)).float()
        logits = logits + out
        probs = probs + out.softmax(1)
    return logits / len(views), probs / len(views)


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    pp: Preprocessing,
    runtime: Runtime,
    batch_size: int = 1024,
    tta: str = "none",
) -> np.ndarray:
    """uint8 faces (N, 48, 48) -> probabilities (N, classes) as numpy."""
    was_training = model.training
    model.eval()
    images = torch.as_tensor(images)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(runtime.device, non_blocking=True)
            out.append(logits_and_probs(model, batch, pp, runtime, tta)[1].cpu())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy()
