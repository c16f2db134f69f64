"""Model registry: every architecture ferlab can build, in one place.

`build_model(name, **kwargs)` is the only way models are made (training,
checkpoints, sweeps, export). Architectures register themselves with
`@register_model` in their own module; this package imports each module
explicitly below, so the registry's contents are visible right here.

Depends on: its own modules (api, registry, seed_cnn, vgg, transfer, efficientnet_lite, ensemble, summary).
"""

from . import (
    ensemble,  # noqa: E402,F401  (registers "ensemble": averaged trained members)
    seed_cnn,  # noqa: E402,F401  (registers "seed_cnn")
    transfer,  # noqa: E402,F401  (registers "vgg16_transfer", "resnet18_transfer", "efficientnet_lite0_transfer")
    vgg,  # noqa: E402,F401  (registers "vgg")
)
from .api import implements_api
from .registry import build_model, list_models, model_defaults, register_model
from .summary import model_summary

__all__ = ["build_model", "implements_api", "list_models", "model_defaults", "model_summary",
           "register_model"]
