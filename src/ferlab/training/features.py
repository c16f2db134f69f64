"""The seed's fast transfer option done properly: with a frozen base, every face's features are
computed once and only the head trains (seconds an epoch instead of minutes).

A frozen base gives each face the same features in every epoch, so running it again is waste;
this holds only where nothing before the head learns (`model.mode: frozen`, no
`extra_convs`) and the faces do not change between epochs (augmentation off). The head's
epochs draw the same shuffles and dropout as the full path would, validation uses the cached
features of each TTA view, and checkpoints hold the whole model, so nothing downstream knows
the difference. `train.feature_cache: true` (the default) uses it wherever it applies and says
why not where it does not; `false` never does.

Depends on: tta (views), preprocess, this package's losses, state, tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import preprocess
from ..inference.tta import tta_views
from .losses import supervised_loss
from .state import TrainState, epoch_seed, epoch_steps
from .tensors import TrainData

BATCH = 256  # faces per base forward pass while the cache is built


@dataclass
class FeatureCache:
    train: torch.Tensor  # (N, C) pooled base features of the training faces
    val: torch.Tensor  # (views, N_val, C): one row of features per validation TTA view
    val_tta: str
    seconds: float


def why_not_cached(cfg, model: nn.Module, world: int) -> str | None:
    """None where the frozen-feature path applies, else the reason it does not."""
    args = cfg.model.args
    if not hasattr(model, "forward_features") or args.get("mode") != "frozen":
        return "the base is not frozen (model.mode)"
    if args.get("extra_convs", 0):
        return "model.extra_convs train between base and head"
    if cfg.augment.enabled:
        return "augmentation gives each face new features every epoch (augment.enabled=false: fast path)"
    if cfg.train.teacher or world > 1 or cfg.train.compile or cfg.data.labels != "majority":
        return "distillation, several processes, torch.compile or soft labels need the full path"
    return None


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor, state: TrainState,
                    tta: str = "none") -> torch.Tensor:
    """(views, N, C) features of uint8 faces, globally average-pooled as the head's first step."""
    model.eval()
    rt = state.runtime
    out: list[list[torch.Tensor]] = []
    for start in range(0, len(images), BATCH):
        views = tta_views(preprocess(images[start:start + BATCH], state.pp), tta)
        with rt.autocast():
            out.append([model.forward_features(rt.memory_format(v)).float().mean((2, 3)) for v in views])
    return torch.stack([torch.cat(column) for column in zip(*out)])


def build_cache(state: TrainState, d: TrainData, val_tta: str) -> FeatureCache:
    start = time.perf_counter()
    train = pooled_features(state.model, d.train_images, state)[0]
    val = pooled_features(state.model, d.val_images, state, val_tta)
    return FeatureCache(train, val, val_tta, time.perf_counter() - start)


def _classifier(model: nn.Module) -> nn.Module:
    """The head after its pooling and flattening (dropout and the linear layer)."""
    return model.head[2:]


def head_epoch(state: TrainState, cache: FeatureCache, labels: torch.Tensor, epoch: int) -> dict[str, float]:
    """One epoch of the head on cached features, seeded as `engine.train_one_epoch` is."""
    t, rt = state.cfg.train, state.runtime
    head = _classifier(state.model).train()
    seed = epoch_seed(t.seed, epoch)  # the same shuffle and dropout draws as the full path
    torch.manual_seed(seed)
    g = torch.Generator(device=rt.device).manual_seed(seed)
    n = len(labels)
    perm = torch.randperm(n, generator=g, device=rt.device)
    loss_sum, correct = torch.zeros((), device=rt.device), torch.zeros((), device=rt.device)
    start = time.perf_counter()
    for step in range(epoch_steps(n, t.batch_size, 1)):
        index = perm[step * t.batch_size:(step + 1) * t.batch_size]
        with rt.autocast():
            out = head(cache.train[index]).float()
            loss = supervised_loss(out, labels[index], None, "majority", t.label_smoothing)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        loss_sum += loss.detach() * len(index)
        correct += (out.argmax(1) == labels[index]).sum()
    seconds = time.perf_counter() - start
    return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n,
            "train_images_per_s": n / max(seconds, 1e-9)}


@torch.no_grad()
def head_validate(state: TrainState, cache: FeatureCache, labels: torch.Tensor) -> dict[str, Any]:
    """Validation loss (of the view-averaged logits) and accuracy, as `engine.validate` computes
    them, from the cached features of each TTA view."""
    head = _classifier(state.model).eval()
    with state.runtime.autocast():
        outs = torch.stack([head(view).float() for view in cache.val])
    logits, probs = outs.mean(0), outs.softmax(2).mean(0)
    n = max(1, len(labels))
    return {"val_loss": float(F.cross_entropy(logits, labels, reduction="sum")) / n,
            "val_accuracy": int((probs.argmax(1) == labels).sum()) / n}
