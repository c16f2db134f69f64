"""Batched data augmentation on the training device: one affine warp per batch.

The seed used Keras' ImageDataGenerator (rotation 20 deg, zoom 0.1, width/height
shift 0.1, shear 0.1, horizontal flip, 'nearest' fill), which transforms one
image at a time in Python. Here every sample's rotation, shear, zoom, shift and
flip are composed into one 2x3 matrix and the whole batch is resampled by a
single `grid_sample` call, so augmentation stays a small fraction of a step.
Random erasing (a recipe addition) is a vectorised mask.

Depends on: torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    rotation: float = 20.0  # degrees, uniform in [-rotation, rotation]
    zoom: float = 0.1  # scale factor in [1 - zoom, 1 + zoom], x and y drawn apart (as Keras)
    width_shift: float = 0.1  # fraction of the width
    height_shift: float = 0.1  # fraction of the height
    shear: float = 0.1  # degrees, as in Keras (the seed's 0.1 is therefore tiny)
    horizontal_flip: bool = True
    fill: str = "nearest"  # nearest (edge pixels, Keras' default) | constant (zeros = mean grey)
    random_erasing: float = 0.0  # probability per image of erasing one rectangle
    erasing_area: tuple[float, float] = (0.02, 0.25)  # fraction of the image erased


_PADDING = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def affine_matrices(n: int, cfg: AugmentConfig, g: torch.Generator, device) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in affine_grid's [-1, 1] space."""
    angle = torch.deg2rad(_uniform(n, -cfg.rotation, cfg.rotation, g, device))
    shear = torch.deg2rad(_uniform(n, -cfg.shear, cfg.shear, g, device))
    zx = _uniform(n, 1 - cfg.zoom, 1 + cfg.zoom, g, device)
    zy = _uniform(n, 1 - cfg.zoom, 1 + cfg.zoom, g, device)
    # A shift of fraction f of the width is 2f in [-1, 1] coordinates.
    tx = _uniform(n, -cfg.width_shift, cfg.width_shift, g, device) * 2
    ty = _uniform(n, -cfg.height_shift, cfg.height_shift, g, device) * 2
    flip = torch.ones(n, device=device)
    if cfg.horizontal_flip:
        flip = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -flip, flip)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Keras composes rotation @ shear @ zoom; the flip mirrors the output's x axis.
    # [[cos, -sin], [sin, cos]] @ [[1, -sin(sh)], [0, cos(sh)]] @ diag(zx * flip, zy)
    a = cos * zx * flip
    b = (-cos * torch.sin(shear) - sin * torch.cos(shear)) * zy
    c = sin * zx * flip
    d = (-sin * torch.sin(shear) + cos * torch.cos(shear)) * zy
    return torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)


def random_erase(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Zero one random rectangle (zero = mean grey after `preprocess`) in a share of images."""
    n, _, h, w = x.shape
    dev = x.device
    area = _uniform(n, *cfg.erasing_area, g, dev) * h * w
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g, dev))
    eh = torch.sqrt(area * aspect).clamp(1, h)
    ew = torch.sqrt(area / aspect).clamp(1, w)
    top = torch.rand(n, generator=g, device=dev) * (h - eh)
    left = torch.rand(n, generator=g, device=dev) * (w - ew)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
    )
    chosen = torch.rand(n, generator=g, device=dev) < cfg.random_erasing
    mask = inside & chosen.view(n, 1, 1)
    return x.masked_fill(mask.unsqueeze(1), 0.0)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a preprocessed float batch (N, C, H, W); returns a new tensor."""
    if not cfg.enabled:
        return x
    if cfg.fill not in _PADDING:
        raise ValueError(f"augment.fill must be one of {', '.join(_PADDING)}, got {cfg.fill!r}")
    theta = affine_matrices(x.shape[0], cfg, g, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=_PADDING[cfg.fill], align_corners=False)
    if cfg.random_erasing > 0:
        x = random_erase(x, cfg, g)
    return x
