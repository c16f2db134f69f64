"""A compact VGG-style network with BatchNorm and global pooling, fast on a CPU at 48x48.

The FER2013 literature's strongest from-scratch single networks are VGG-like
(Pramerdorfer & Kampel 2016; Khaireddin & Chen 2021). This one keeps their shape
- stages of 3x3 conv + BN + ReLU, max-pool between stages - but ends in global
average pooling, so the head stays small and the net is cheap enough to train
in minutes on two CPU cores.

Depends on: labels, api (SequentialNet), registry; torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..core.labels import NUM_CLASSES
from .api import SequentialNet
from .registry import ModelConfigError, positive, register_model


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model
def vgg(
    widths: Sequence[int] = (32, 64, 128, 256),
    depth: int = 2,
    dropout_rate: float = 0.2,
    num_classes: int = NUM_CLASSES,
    in_chans: int = 1,
) -> SequentialNet:
    """`widths` channels per stage, `depth` convs per stage; stage k runs at 48 / 2**k px."""
    widths = list(widths)
    positive(widths=widths, depth=depth)
    if not 0.0 <= dropout_rate < 1.0:
        raise ModelConfigError(f"model.dropout_rate must be in [0, 1), got {dropout_rate}")
    if not widths or depth < 1:
        raise ModelConfigError(f"vgg needs at least one stage and depth >= 1, got {widths}, {depth}")
    if 48 >> (len(widths) - 1) < 1:
        raise ModelConfigError(f"vgg with {len(widths)} stages shrinks 48x48 below 1x1")
    layers: list[nn.Module] = []
    channels = in_chans
    for stage, width in enumerate(widths):
        if stage > 0:
            layers.append(nn.MaxPool2d(2))  # (N, C, H, W) -> (N, C, H/2, W/2)
        for _ in range(depth):
            layers += _conv_bn(channels, width)
            channels = width
    head_start = len(layers)
    layers += [
        nn.AdaptiveAvgPool2d(1),  # (N, C, h, w) -> (N, C, 1, 1)
        nn.Flatten(),
        nn.Dropout(dropout_rate),
        nn.Linear(channels, num_classes),
    ]
    model = SequentialNet(layers, head_start)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
