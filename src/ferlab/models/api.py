"""The small API every trainable architecture in the registry implements, as timm's do.

    forward_features(x)        the feature map before the classifier head (N, C, h, w)
    forward_head(features)     features -> logits; forward(x) == forward_head(forward_features(x))
    get_classifier()           (name, nn.Linear): the layer that maps features to classes
    reset_classifier(n)        a fresh classifier for n classes (your own label set)
    stages()                   the feature extractor's stages, input to output

Fine-tuning (`train.finetune`: head / last N stages, a new label set), frozen-feature
training and layer-wise learning rates use these instead of guessing from module order.
The seed's CNN and `vgg` are one `nn.Sequential` (`SequentialNet`: keys stay `0.weight`,
... so every checkpoint loads unchanged); the transfer wrapper implements the same
methods. An ensemble is a network of trained members, not trained as one: it has none
of them (its members do).

Depends on: torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import nn

POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
API = ("forward_features", "forward_head", "get_classifier", "reset_classifier", "stages")


def split_at_pooling(layers: Iterable[nn.Module]) -> list[nn.Sequential]:
    """Stages of a plain CNN: the layers up to and including each pooling layer."""
    stages, current = [], []
    for layer in layers:
        current.append(layer)
        if isinstance(layer, POOLING):
            stages.append(nn.Sequential(*current))
            current = []
    if any(any(True for _ in m.parameters()) for m in current):
        stages.append(nn.Sequential(*current))
    return stages


class SequentialNet(nn.Sequential):
    """A plain CNN as one nn.Sequential: `head_start` is the index where the head begins
    (global pooling or flattening, dropout, the classifier)."""

    def __init__(self, layers: list[nn.Module], head_start: int):
        super().__init__(*layers)
        self.head_start = head_start

    def __getitem__(self, idx):
        # A slice is a plain nn.Sequential of those layers (where a head may not begin).
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[: self.head_start]:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[self.head_start :]:
            x = layer(x)
        return x

    def get_classifier(self) -> tuple[str, nn.Linear]:
        index = max(i for i, m in enumerate(self) if isinstance(m, nn.Linear))
        return str(index), self[index]

    def reset_classifier(self, num_classes: int) -> None:
        name, old = self.get_classifier()
        self[int(name)] = nn.Linear(old.in_features, num_classes).to(old.weight.device)

    def stages(self) -> list[nn.Module]:
        return split_at_pooling(list(self)[: self.head_start])


def implements_api(model: nn.Module) -> bool:
    return all(callable(getattr(model, name, None)) for name in API)
