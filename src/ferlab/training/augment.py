"""Batched data augmentation on the training device: one affine warp per batch.

The seed used Keras' ImageDataGenerator (rotation 20 deg, zoom 0.1, width/height
shift 0.1, shear 0.1, horizontal flip, 'nearest' fill), which transforms one
image at a time in Python. Here every sample's rotation, shear, zoom, shift and
flip are composed into one 2x3 matrix and the whole batch is resampled by a
single `grid_sample` call, so augmentation stays a small fraction of a step.
Random erasing (a recipe addition) is a vectorised mask.

The photometric degradations (brightness, contrast, gamma, blur, noise, JPEG-like
block quantisation, low resolution) cover how faces in users' photos differ from
FER2013's: lighting, focus, compression and size. Each is a batched tensor op on
the training device, applied in pixel space ([0, 1]) and mapped back, so they
cost a few percent of a step. All are off by default (value 0).

Depends on: core (AugmentConfig, the `augment` section's dataclass; errors), torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.config import AugmentConfig
from ..core.errors import InputError

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
    if cfg.crop_area < 1.0:
        # Keeping a crop of relative side c means scaling output coordinates by c; the
        # crop's centre may then move by up to 1 - c (in [-1, 1] units) and stay inside.
        area = _uniform(n, cfg.crop_area, 1.0, g, device)
        ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), g, device))
        cx, cy = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
        tx = tx + _uniform(n, -1.0, 1.0, g, device) * (1 - cx)
        ty = ty + _uniform(n, -1.0, 1.0, g, device) * (1 - cy)
        zx, zy = zx * cx, zy * cy
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


def _chosen(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    """(n, 1, 1, 1) bool: which images a degradation applied with probability p hits."""
    return (torch.rand(n, generator=g, device=device) < p).view(n, 1, 1, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur; `sigma` (n,) in pixels, radius 3 (sigma <= ~1.5)."""
    n, c, h, w = x.shape
    taps = torch.arange(-3, 4, device=x.device, dtype=x.dtype)
    k = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, 7)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), k.view(n * c, 1, 1, 7), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), k.view(n * c, 1, 7, 1), groups=n * c)
    return y.view(n, c, h, w)


# The JPEG standard's luminance quantisation table (ITU T.81, Annex K).
_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)


def _dct_matrix(device, dtype) -> torch.Tensor:
    k = torch.arange(8, device=device, dtype=dtype)
    m = torch.cos((2 * k.view(1, 8) + 1) * k.view(8, 1) * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m  # orthonormal DCT-II: coefficients = m @ block @ m.T


def jpeg_like(p: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Quantise 8x8 blocks' DCT coefficients as a JPEG encoder at `quality` (n,) would.

    `p` is (n, c, h, w) in [0, 1]; sides that are not multiples of 8 are padded by
    replication and cropped back. Chroma subsampling and entropy coding are left out:
    the blocking and ringing that hurt a classifier come from this quantisation.
    """
    n, c, h, w = p.shape
    ph, pw = -h % 8, -w % 8
    y = F.pad(p * 255 - 128, (0, pw, 0, ph), mode="replicate")
    hh, ww = y.shape[-2:]
    blocks = y.view(n, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # (n, c, bh, bw, 8, 8)
    d = _dct_matrix(p.device, p.dtype)
    q = quality.clamp(1, 100).to(p.dtype)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q).view(n, 1, 1, 1, 1, 1) / 100
    table = (torch.tensor(_JPEG_LUMA, device=p.device, dtype=p.dtype).view(8, 8) * scale).clamp(min=1)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / table) * table
    y = (d.T @ coef @ d).transpose(3, 4).reshape(n, c, hh, ww)[..., :h, :w]
    return ((y + 128) / 255).clamp(0, 1)


def photometric(p: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Degrade a batch of pixels in [0, 1] (N, C, H, W) as photos do; returns [0, 1]."""
    n, dev = p.shape[0], p.device
    shape = (n, 1, 1, 1)
    if cfg.low_resolution > 0:
        lo, hi = cfg.low_resolution_px
        side = int(torch.randint(lo, hi + 1, (1,), generator=g, device=dev))  # one size per batch
        small = F.interpolate(p, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        back = F.interpolate(small, size=p.shape[-2:], mode="bilinear", align_corners=False)
        p = torch.where(_chosen(n, cfg.low_resolution, g, dev), back, p)
    if cfg.blur > 0:
        sigma = _uniform(n, 0.3, max(0.3, cfg.blur_sigma), g, dev)
        p = torch.where(_chosen(n, cfg.blur, g, dev), gaussian_blur(p, sigma), p)
    if cfg.contrast > 0:
        factor = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(shape)
        mean = p.mean((1, 2, 3), keepdim=True)
        p = (p - mean) * factor + mean
    if cfg.brightness > 0:
        p = p + _uniform(n, -cfg.brightness, cfg.brightness, g, dev).view(shape)
    p = p.clamp(0, 1)
    if cfg.gamma > 0:
        p = p.clamp_min(1e-4) ** torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, g, dev)).view(shape)
    if cfg.noise > 0:
        std = _uniform(n, 0.0, cfg.noise, g, dev).view(shape)
        noise = torch.randn(p.shape, generator=g, device=dev, dtype=p.dtype)
        p = (p + noise * std).clamp(0, 1)
    if cfg.jpeg > 0:
        lo, hi = cfg.jpeg_quality
        quality = _uniform(n, lo, hi, g, dev).round()
        p = torch.where(_chosen(n, cfg.jpeg, g, dev), jpeg_like(p, quality), p)
    return p


def has_photometric(cfg: AugmentConfig) -> bool:
    return any(v > 0 for v in (cfg.brightness, cfg.contrast, cfg.gamma, cfg.blur, cfg.noise,
                               cfg.jpeg, cfg.low_resolution))


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, mean: float = 0.5, std: float = 0.25,
) -> torch.Tensor:
    """Augment a preprocessed float batch (N, C, H, W); returns a new tensor.

    `mean` and `std` are the preprocessing's, so photometric changes happen on pixels.
    """
    if not cfg.enabled:
        return x
    if cfg.fill not in _PADDING:
        raise InputError(f"augment.fill must be one of {', '.join(_PADDING)}, got {cfg.fill!r}")
    if has_photometric(cfg):
        x = (photometric(x * std + mean, cfg, g) - mean) / std
    theta = affine_matrices(x.shape[0], cfg, g, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=_PADDING[cfg.fill], align_corners=False)
    if cfg.random_erasing > 0:
        x = random_erase(x, cfg, g)
    return x
