"""An ensemble is a model: several trained networks whose calibrated probabilities are averaged.

The field's strongest FER2013 results are ensembles of a few CNNs (Pramerdorfer &
Kampel 2016: 75.2%). Here an ensemble is one `nn.Module`, registered like any
architecture, so its checkpoint loads through the one loader and works wherever a
model does - evaluate, predict, serve, ONNX export, saliency, `train.teacher`.

Each `EnsembleMember` runs its own test-time augmentation inside `forward` (the
views from `tta.tta_views`, as one batch) and applies its own calibration
temperature, so members trained with different TTA are averaged the way each was
meant to be used. The ensemble returns log(mean probability): a softmax of it gives
the averaged probabilities back, so code that treats outputs as logits needs no
special case. The ensemble's own default TTA is therefore "none".

Depends on: tta (views and their average), registry; torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.labels import NUM_CLASSES
from ..inference.tta import check_tta, mean_over_views
from .registry import ModelConfigError, build_model, register_model

_EPS = 1e-12  # as calibration.apply_temperature: log(0) never reaches the average


class EnsembleMember(nn.Module):
    """One trained network with its TTA and temperature: uint8-preprocessed batch ->
    calibrated log-probabilities."""

    def __init__(self, net: nn.Module, tta: str = "none", temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.tta = check_tta(tta, "ensemble member tta") or "none"
        if not temperature > 0:
            raise ModelConfigError(f"ensemble member temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # All views in one batch: on a CPU ten small forwards cost far more than one of ten.
        probs = mean_over_views(self.net, x, self.tta)[1]
        return torch.log_softmax(torch.log(probs.clamp_min(_EPS)) / self.temperature, 1)


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[EnsembleMember]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(members, N, classes) calibrated log-probabilities."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.member_log_probs(x).exp().mean(0)
        return torch.log(probs.clamp_min(_EPS))


def _member(spec: Any, index: int, num_classes: int) -> EnsembleMember:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ModelConfigError(f"ensemble member {index} must be a mapping with a model 'name', got {spec!r}")
    unknown = sorted(set(spec) - {"name", "args", "tta", "temperature"})
    if unknown:
        raise ModelConfigError(f"ensemble member {index}: unknown field(s) {', '.join(unknown)}")
    args = {"num_classes": num_classes, **(spec.get("args") or {})}
    if args["num_classes"] != num_classes:
        raise ModelConfigError(f"ensemble member {index} has {args['num_classes']} classes, "
                               f"the ensemble {num_classes}")
    net = build_model(spec["name"], **args)
    return EnsembleMember(net, spec.get("tta", "none"), float(spec.get("temperature", 1.0)))


@register_model
def ensemble(members: Sequence[Any] = (), num_classes: int = NUM_CLASSES) -> Ensemble:
    """`members`: one {name, args, tta, temperature} per network (what `ferlab ensemble`
    writes); each is built from the registry. Trained weights come from the checkpoint."""
    if not members:
        raise ModelConfigError("an ensemble needs at least one member: build one with "
                               "`ferlab ensemble MODEL MODEL ... -o ens.pt`")
    return Ensemble([_member(spec, i, num_classes) for i, spec in enumerate(members)])


def without_member_tta(model: nn.Module) -> nn.Module:
    """Set every ensemble member inside `model` to plain views (in place; returns it).
    Saliency explains the plain forward pass, and a teacher already sees an augmented
    batch: the members' TTA would multiply the cost by its views for no use there."""
    for m in model.modules():
        if isinstance(m, EnsembleMember):
            m.tta = "none"
    return model
