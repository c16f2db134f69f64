"""Self-describing checkpoints: one file is enough to rebuild, evaluate and run a model.

A checkpoint holds the weights and everything needed to use them - model name and
arguments, class names, preprocessing, the run's config, epoch and metrics - plus
the optimizer, scheduler and history for `--resume`. `load_checkpoint` is the one
place that reads them; it accepts a file, a run folder or a shipped model's name.

Depends on: models (to rebuild the network), preprocess, shipped, files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import atomic_path
from .models import build_model
from .preprocess import Preprocessing
from .shipped import bundled_path, portable_source

FORMAT = "ferlab-checkpoint"
VERSION = 1


from .errors import CheckpointError  # noqa: E402,F401  (re-exported: raised by the light path too)


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on the requested device
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    meta: dict[str, Any]  # the whole checkpoint except the weights
    path: Path

    @property
    def description(self) -> str:
        m = self.meta.get("metrics", {})
        acc = m.get("val_accuracy")
        tail = f", val_accuracy {acc:.4f}" if isinstance(acc, float) else ""
        name = self.meta["model"]["name"]
        if name == "ensemble":
            kinds = [m.get("name", "?") for m in self.meta["model"]["args"].get("members", [])]
            return f"ensemble of {len(kinds)} ({', '.join(kinds)}) from {self.path}"
        return f"{name} from {self.path} (epoch {self.meta.get('epoch')}{tail})"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def checkpoint_dict(
    model: nn.Module,
    *,
    model_name: str,
    model_args: dict[str, Any],
    class_names: tuple[str, ...],
    preprocessing: Preprocessing,
    epoch: int,
    metrics: dict[str, Any],
    config: dict[str, Any] | None = None,
    **state: Any,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_name, "args": dict(model_args)},
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "config": config,
        **state,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a run folder (its best.pt, else last.pt), or a shipped model's name."""
    path = bundled_path(path) or Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt", "model.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: run folder holds no best.pt or last.pt")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean the same to a user
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ferlab checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt['version']} is newer than this ferlab reads "
            f"({VERSION}); upgrade ferlab"
        )
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    file = resolve_checkpoint(path)
    ckpt = read_checkpoint(file)
    # The weights come from the checkpoint: an ImageNet file named at training time
    # (`pretrained`) is neither needed nor necessarily present here.
    args = {k: v for k, v in ckpt["model"]["args"].items() if k != "pretrained"}
    model = build_model(ckpt["model"]["name"], **args)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "scheduler")}
    return LoadedModel(
        model,
        tuple(ckpt["class_names"]),
        Preprocessing.from_dict(ckpt["preprocessing"]),
        meta,
        file,
    )


def slim_checkpoint(path: str | Path, out: str | Path, tta: str | None = None) -> Path:
    """Copy a checkpoint without optimizer, scheduler and history: what a shipped model needs.

    The run's config, metrics and epoch stay for provenance; `tta` sets the test-time
    augmentation that prediction and evaluation use by default.
    """
    ckpt = read_checkpoint(path)
    slim = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "history")}
    slim["source"] = portable_source(resolve_checkpoint(path))
    if tta is not None:
        slim["tta"] = tta
    save_checkpoint(slim, out)
    return Path(out)
