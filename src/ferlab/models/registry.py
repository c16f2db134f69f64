"""A small timm-style registry: name -> builder function with keyword arguments.

Depends on: torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class ModelConfigError(ValueError):
    """An invalid architecture or configuration, found before any training starts."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ModelConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def model_defaults(name: str) -> dict[str, Any]:
    """The builder's keyword arguments and their defaults (the config a model accepts)."""
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def build_model(name: str = "seed_cnn", **kwargs: Any) -> nn.Module:
    """Build a registered model. Unknown keyword arguments are refused with the valid ones."""
    builder = _builder(name)
    valid = model_defaults(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelConfigError(
            f"model {name!r} has no option {', '.join(unknown)}; options: {', '.join(valid)}"
        )
    return builder(**kwargs)
