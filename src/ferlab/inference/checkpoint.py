"""Self-describing checkpoints: one file is enough to rebuild, evaluate and run a model.

A checkpoint holds the weights and everything needed to use them - model name and
arguments, class names, preprocessing, the run's config, epoch and metrics - plus
the optimizer, scheduler and history for `--resume`. `load_checkpoint` is the one
place that reads them; it accepts a file, a run folder or a shipped model's name.

Depends on: errors, models (to rebuild the network), preprocess, shipped, files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.files import atomic_path
from ..data.preprocess import Preprocessing
from ..models import build_model
from .shipped import RUN_FOLDER_MODELS, is_shipped, portable_source, resolve_model_ref

FORMAT = "ferlab-checkpoint"
VERSION = 1


from ..core.errors import CheckpointError  # noqa: E402,F401  (re-exported: raised by the light path too)


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
    # torch.save given a path turns a full disk into a bare RuntimeError from its C++ writer;
    # given a Python file, the OSError (ENOSPC, EIO, ...) reaches atomic_path, which names the file.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(ckpt, f)
        except RuntimeError as e:
            # The writer's clean-up after a failed write raises its own RuntimeError over the
            # OSError that caused it: surface the disk's answer, not the C++ assertion.
            cause = e.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from e


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a run folder (its best.pt, else last.pt), or a shipped model's
    name -> the existing file (`shipped.resolve_model_ref`, checked)."""
    file = resolve_model_ref(path)
    if file.is_dir():
        raise CheckpointError(f"{file}: run folder holds no {', '.join(RUN_FOLDER_MODELS)}")
    if not file.exists():
        raise CheckpointError(f"{file}: no such checkpoint file or run folder")
    return file


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean the same to a user
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ferlab checkpoint")
    if not isinstance(ckpt.get("version", 0), int) or ckpt.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')!r} is newer than this ferlab reads "
            f"({VERSION}); upgrade ferlab"
        )
    check_checkpoint(ckpt, path)
    return ckpt


# What a checkpoint from elsewhere may ask for before anything is allocated: the largest
# shipped or recipe model has ~14 M parameters and ~1 GFLOP per face; these leave room
# for ImageNet-sized networks and refuse the absurd (a terabyte of filters).
MAX_PARAMETERS = 500_000_000
MAX_GFLOPS_PER_FACE = 200.0
MAX_CLASSES = 1000


def _field_error(path: Path, field: str, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: field {field}: {why}")


def check_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Check a checkpoint's structure, preprocessing, classes, the cost of the architecture
    it asks for and the shapes of its weights - before any real tensor is allocated.

    The network is built on PyTorch's "meta" device (shapes only, no memory), counted, run
    once on a meta face for its cost and output width, and its weight shapes are compared
    with the file's. Every failure is one CheckpointError naming the file and the field."""
    path = Path(path)
    spec = ckpt.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not isinstance(spec.get("args", {}), dict):
        raise _field_error(path, "model", "missing, or not a mapping with a name and args")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise _field_error(path, "state_dict", "missing, or not a mapping of names to tensors")
    names = ckpt.get("class_names")
    if not isinstance(names, (list, tuple)) or not 2 <= len(names) <= MAX_CLASSES \
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise _field_error(path, "class_names", f"must be 2 to {MAX_CLASSES} distinct names")
    try:
        pp = Preprocessing.from_dict(ckpt.get("preprocessing"))
    except (TypeError, ValueError) as e:
        raise _field_error(path, "preprocessing", str(e)) from e
    _check_architecture(spec, state, len(names), pp.image_size, path)


def _check_architecture(spec: dict[str, Any], state: dict[str, torch.Tensor], classes: int,
                        size: int, path: Path) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.registry import ModelConfigError

    args = {k: v for k, v in spec.get("args", {}).items() if k != "pretrained"}
    try:
        with torch.device("meta"):
            net = build_model(spec["name"], **args)
    except (ModelConfigError, TypeError, ValueError) as e:
        raise _field_error(path, "model", str(e)) from e
    count = sum(p.numel() for p in net.parameters())
    if count > MAX_PARAMETERS:
        raise _field_error(path, "model", f"{spec['name']} with these args has {count:,} parameters, "
                                          f"more than the {MAX_PARAMETERS:,} ferlab loads")
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:3])}" if missing else "") + \
               ("; " if missing and unexpected else "") + \
               (f"unexpected {', '.join(unexpected[:3])}" if unexpected else "")
        raise _field_error(path, "state_dict", f"does not match {spec['name']}: {what}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise _field_error(path, f"state_dict.{key}", f"shape {tuple(state[key].shape)}, "
                                                          f"{spec['name']} needs {tuple(tensor.shape)}")
    if is_shipped(path):
        return  # the package's own files: their cost is known, and a first meta run costs ~1 s
    try:
        with FlopCounterMode(display=False) as flops, torch.no_grad():
            out = net.eval()(torch.zeros(1, 1, size, size, device="meta"))
    except (RuntimeError, NotImplementedError, ValueError):
        return  # an op without a meta kernel: the shapes above were the check that mattered
    gflops = flops.get_total_flops() / 1e9
    if gflops > MAX_GFLOPS_PER_FACE:
        raise _field_error(path, "model", f"{spec['name']} costs {gflops:,.0f} GFLOP per face, more "
                                          f"than the {MAX_GFLOPS_PER_FACE:,.0f} ferlab runs")
    if out.ndim != 2 or out.shape[1] != classes:
        raise _field_error(path, "class_names", f"{classes} names but the network has "
                                                f"{out.shape[1] if out.ndim == 2 else '?'} outputs")


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
