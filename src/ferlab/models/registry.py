"""A small timm-style registry: name -> builder function with keyword arguments.

Depends on: errors, torch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.errors import UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class ModelConfigError(UserError, ValueError):
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


def _kind(default: Any) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (list, tuple)):
        # An empty default says nothing about its items (an ensemble's members are mappings).
        return "a list of integers" if default and all(isinstance(v, int) for v in default) else "a list"
    return None


def _fits(value: Any, kind: str) -> bool:
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "a number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "a string":
        return isinstance(value, str)
    if kind == "a list of integers":
        return isinstance(value, (list, tuple)) and all(_fits(v, "an integer") for v in value)
    return isinstance(value, (list, tuple))


def check_model_args(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse unknown options and values of the wrong type (the default's), naming the field."""
    valid = model_defaults(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ModelConfigError(
            f"model {name!r} has no option {', '.join(unknown)}; options: {', '.join(valid)}"
        )
    for key, value in kwargs.items():
        kind = _kind(valid[key])
        if kind is not None and not _fits(value, kind):
            raise ModelConfigError(f"model.{key} must be {kind}, got {value!r}")


def positive(**values: Any) -> None:
    """Builders' shared check: each named value (int or list of ints) must be >= 1."""
    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or any(v < 1 for v in items):
            raise ModelConfigError(f"model.{key} must be >= 1 (each entry, for a list), got {value!r}")


def build_model(name: str = "seed_cnn", **kwargs: Any) -> nn.Module:
    """Build a registered model. Unknown keyword arguments are refused with the valid ones,
    and values of the wrong type with the field's name."""
    builder = _builder(name)
    check_model_args(name, kwargs)
    return builder(**kwargs)


def check_forward(model: nn.Module, name: str, input_size: int = 48) -> None:
    """One forward pass on two blank faces, before any file is written: an architecture that
    builds but cannot run (a kernel larger than its input, ...) fails here, with its name."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(torch.zeros(2, 1, input_size, input_size, device=device))
    except RuntimeError as e:
        raise ModelConfigError(f"model {name!r} cannot run on {input_size}x{input_size} faces with these "
                               f"settings: {str(e).splitlines()[0]}") from e
    finally:
        model.train(was_training)
