"""`ferlab ensemble`: several trained models -> one ensemble checkpoint file.

Members are any PyTorch model references (checkpoints, run folders, shipped names;
an ensemble's members are taken over one by one). They must share class names and
preprocessing - the ensemble has one input and one label set - and each keeps its
default TTA (or the one given) and its calibration temperature. The file is an
ordinary ferlab checkpoint of the registered `ensemble` model, so everything that
loads a model loads it; `members` in its metadata records where each came from and
how it scored, for the model card and `ferlab evaluate`.

An ensemble's own temperature (from `ferlab calibrate ens.pt`) sits on top of its
members'; `--uncalibrated` drops only that outer one (the members' stay part of the
model), and an ensemble taken over as a member leaves it behind (said in the log):
calibrate the new file.

Weights are stored as float16 by default (half the file, so a five-member ensemble
of the bundled size stays under 10 MB; they are float32 again once loaded, and
the predictions move by ~1e-3 in probability).

Depends on: errors, checkpoint, classifier, files, inference, models (ensemble); torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import InputError
from ..core.files import check_writable, refuse_overwriting_inputs
from ..models import build_model
from ..models.ensemble import Ensemble
from .checkpoint import CheckpointError, LoadedModel, checkpoint_dict, save_checkpoint
from .classifier import Classifier, TorchClassifier, load_classifier, require_torch
from .shipped import portable_source
from .torch_proba import check_tta, predict_proba
from .tta import VIEW_COUNT, VIEWS_PER_BATCH, faces_per_batch


@dataclass(frozen=True)
class _Part:
    """One member as it goes into the file."""

    spec: dict[str, Any]  # {name, args, tta, temperature}, what the registry builds
    state: dict[str, torch.Tensor]  # its weights, keyed inside the member's `net`
    record: dict[str, Any]  # provenance for the model card


def _parts(loaded: LoadedModel, tta: str | None, temperature: float) -> list[_Part]:
    """A loaded model's member(s): itself, or the members of an ensemble."""
    model = loaded.model
    if isinstance(model, Ensemble):
        specs = loaded.meta["model"]["args"]["members"]
        records = loaded.meta.get("members") or [{} for _ in specs]
        return [
            _Part({**spec, "tta": tta or spec.get("tta", "none")},
                  {k: v.detach().cpu() for k, v in member.net.state_dict().items()}, record)
            for spec, member, record in zip(specs, model.members, records)
        ]
    args = {k: v for k, v in loaded.meta["model"]["args"].items() if k != "pretrained"}
    spec = {"name": loaded.meta["model"]["name"], "args": args,
            "tta": tta or loaded.meta.get("tta", "none"), "temperature": temperature}
    record = {"source": portable_source(loaded.path), "model": loaded.meta["model"]["name"],
              "epoch": loaded.meta.get("epoch"),
              "val_accuracy": (loaded.meta.get("metrics") or {}).get("val_accuracy"),
              "val_split": loaded.meta.get("val_split")}
    return [_Part(spec, {k: v.detach().cpu() for k, v in model.state_dict().items()}, record)]


def _check_compatible(first: TorchClassifier, other: TorchClassifier) -> None:
    if tuple(other.class_names) != tuple(first.class_names):
        raise CheckpointError(
            f"ensemble member {other.path}: classes {', '.join(other.class_names)} differ from "
            f"{first.path}'s ({', '.join(first.class_names)}); members must share one label set"
        )
    if other.preprocessing != first.preprocessing:
        raise CheckpointError(
            f"ensemble member {other.path}: input {other.preprocessing.to_dict()} differs from "
            f"{first.path}'s {first.preprocessing.to_dict()}; members must share the preprocessing"
        )


def build_ensemble(
    refs: Sequence[str | Path],
    out: str | Path,
    *,
    tta: str | None = None,
    half: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Write one ensemble checkpoint from `refs`; `tta` overrides every member's own: one
    mode for all, or a comma-separated list with one mode per member (an ensemble given as
    a model counts as its members): `flip,flip,tencrop` spends the views where they pay."""
    if len(refs) < 2:
        raise InputError(f"an ensemble needs at least two models, got {len(refs)}")
    per_member = [check_tta(t.strip(), "--tta") for t in tta.split(",")] if tta and "," in tta else None
    if per_member is None:
        check_tta(tta, "--tta")
    out = Path(out)
    if out.suffix not in (".pt", ".pth"):
        raise InputError(f"{out}: an ensemble is a PyTorch checkpoint; choose a .pt output")
    check_writable(out.parent)  # before every member is loaded
    classifiers = [require_torch(load_classifier(r, device="cpu", precision="fp32"), "an ensemble")
                   for r in refs]
    refuse_overwriting_inputs(out, [c.path for c in classifiers], "ensemble")
    for other in classifiers[1:]:
        _check_compatible(classifiers[0], other)
    parts = [p for c in classifiers for p in _parts(c.loaded, None if per_member else tta, c.temperature)]
    if per_member:
        if len(per_member) != len(parts):
            raise InputError(f"--tta lists {len(per_member)} modes for {len(parts)} members "
                             "(an ensemble given as a model counts as its members)")
        parts = [_Part({**p.spec, "tta": t}, p.state, p.record) for p, t in zip(parts, per_member)]
    for c in classifiers:
        if isinstance(c.model, Ensemble) and c.temperature != 1.0:
            log(f"{c.path}: its own temperature {c.temperature:.3f} is not carried over; "
                "calibrate the new ensemble with `ferlab calibrate`")
    first = classifiers[0]
    args = {"members": [p.spec for p in parts], "num_classes": len(first.class_names)}
    # Built from the specs and loaded strictly, as `load_checkpoint` will: a file that
    # would not load is never written.
    model = build_model("ensemble", **args)
    model.load_state_dict({f"members.{i}.net.{k}": v
                           for i, p in enumerate(parts) for k, v in p.state.items()})
    ckpt = checkpoint_dict(
        model,
        model_name="ensemble",
        model_args=args,
        class_names=first.class_names,
        preprocessing=first.preprocessing,
        epoch=None,
        metrics={},
        tta="none",  # each member runs its own TTA inside the ensemble's forward
        members=[p.record for p in parts],
        weights="float16" if half else "float32",
    )
    if half:
        ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v
                              for k, v in ckpt["state_dict"].items()}
    for i, p in enumerate(parts):
        acc = p.record.get("val_accuracy")
        score = f", {p.record.get('val_split') or 'val'} accuracy {acc:.4f}" if isinstance(acc, float) else ""
        log(f"member {i}: {p.spec['name']} from {p.record.get('source', '?')} "
            f"(tta {p.spec['tta']}, temperature {p.spec['temperature']:.3f}{score})")
    save_checkpoint(ckpt, out)
    return out


def ensemble_members(classifier: Classifier) -> list[tuple[str, torch.nn.Module]]:
    """(description, member module) per member of a PyTorch ensemble; [] for anything else."""
    model = getattr(classifier, "model", None)
    if not isinstance(model, Ensemble):
        return []
    records = (getattr(classifier, "loaded", None) and classifier.loaded.meta.get("members")) or []
    names = [r.get("source") or r.get("model") for r in records] + [None] * len(model.members)
    return [(names[i] or f"member {i}", m) for i, m in enumerate(model.members)]


def member_probabilities(classifier: TorchClassifier, faces: np.ndarray,
                         views: int = VIEWS_PER_BATCH) -> list[np.ndarray]:
    """Each member's calibrated probabilities (its own TTA), for per-member scores; each
    forward pass holds at most `views` views (faces x the member's TTA views)."""
    return [predict_proba(m, faces, classifier.preprocessing, classifier.runtime, tta="none",
                          batch_size=faces_per_batch(VIEW_COUNT[m.tta], views),
                          num_classes=len(classifier.class_names))
            for _, m in ensemble_members(classifier)]
