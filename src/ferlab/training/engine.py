"""One epoch: `train_one_epoch(state, data, epoch)`, `validate`, and `run_epoch` (both, as a history row).

The training split lives on the device as one uint8 tensor; each batch is indexed,
normalised by `preprocess`, augmented by one batched affine warp and run in
channels_last with bf16/fp16 autocast where the device has it. Each epoch's
randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
resumed run repeats exactly what an uninterrupted one would have done.

Depends on: augment, inference, models.freeze, preprocess, runtime, and this
package's state, tensors, losses, distill and features.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.runtime import Runtime
from ..data.preprocess import Preprocessing, preprocess
from ..inference.torch_proba import logits_and_probs
from ..models.freeze import freeze_batchnorm_stats
from .augment import augment_batch
from .distill import distillation_loss
from .features import FeatureCache, head_epoch, head_validate
from .losses import supervised_loss
from .state import TrainState, epoch_seed, epoch_steps
from .tensors import TrainData

SYNC_EVERY = 10  # steps between progress-bar updates: .item() waits for the device


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor,
               targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on an augmented, preprocessed batch; returns (loss, logits).
    `targets`: the batch's FER+ vote distributions (soft label modes), else None."""
    t = state.cfg.train
    with state.runtime.autocast():
        out = state.train_model(x)
        loss = supervised_loss(out.float(), y, targets, state.cfg.data.labels, t.label_smoothing)
        if state.teacher is not None:
            with torch.no_grad():
                soft = state.teacher(x).float()
            loss = distillation_loss(out.float(), soft, y, t.distill_weight, t.distill_temperature,
                                     hard=loss)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return loss.detach(), out


def train_one_epoch(
    state: TrainState, data: TrainData, epoch: int, *, progress: bool = False, max_steps: int | None = None,
) -> dict[str, float]:
    """One pass over the training tensors; returns loss, accuracy and images/s."""
    t, runtime, world = state.cfg.train, state.runtime, state.dist.world
    state.train_model.train()
    freeze_batchnorm_stats(state.model)  # frozen layers (transfer learning, train.finetune) keep their stats
    seed = epoch_seed(t.seed, epoch)
    torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
    g = torch.Generator(device=runtime.device).manual_seed(seed)
    n = len(data.train_labels)
    perm = torch.randperm(n, generator=g, device=runtime.device)
    # Each rank takes every world-th sample, so a global batch is shared out evenly.
    perm = perm[: n - n % world][state.dist.rank :: world]
    labels, targets = data.train_labels, data.train_targets
    if targets is not None and data.label_mode == "probability":
        # FER+ probability mode: this epoch's label for each face, drawn from its votes.
        labels, targets = torch.multinomial(targets, 1, generator=g).squeeze(1), None
    per_rank_batch = max(1, t.batch_size // world)
    steps = min(epoch_steps(n, t.batch_size, world), max_steps or n)

    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device)
    seen = 0
    bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="batch", leave=False, dynamic_ncols=True) \
        if progress else None
    start = time.perf_counter()
    for step in range(steps):
        index = perm[step * per_rank_batch : (step + 1) * per_rank_batch]
        x = augment_batch(preprocess(data.train_images[index], state.pp), state.cfg.augment, g,
                          state.pp.mean, state.pp.std)
        y = labels[index]
        loss, out = train_step(state, runtime.memory_format(x), y,
                               None if targets is None else targets[index])
        loss_sum += loss * len(y)
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update()
            if step % SYNC_EVERY == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    loss_total, correct_total, seen_total = state.dist.sum(
        loss_sum, correct, torch.tensor(float(seen), device=runtime.device))
    seen_total = max(1.0, float(seen_total))
    return {"loss": float(loss_total) / seen_total, "accuracy": float(correct_total) / seen_total,
            "train_images_per_s": seen_total / max(seconds, 1e-9)}


@torch.no_grad()
def validate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, pp: Preprocessing, runtime: Runtime,
    batch_size: int = 1024, tta: str = "none",
) -> dict[str, float]:
    """Validation loss (of the TTA-averaged logits) and accuracy."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        logits, probs = logits_and_probs(model, x, pp, runtime, tta)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((probs.argmax(1) == y).sum())
    model.train(was_training)
    n = max(1, len(labels))
    return {"val_loss": loss_sum / n, "val_accuracy": correct / n}


def epoch_tta(t, epoch: int) -> str:
    """The validation TTA of an epoch: `late_tta` in the last `late_tta_epochs`, else `tta`."""
    return t.late_tta if t.late_tta_epochs and epoch > t.epochs - t.late_tta_epochs else t.tta


def run_epoch(state: TrainState, d: TrainData, epoch: int, elapsed: float, progress: bool,
              cache: FeatureCache | None = None) -> dict[str, Any]:
    """Train one epoch and validate; the history row. With a `cache` (a frozen base's features,
    features.py) only the head trains, and validates from the cache where its TTA matches."""
    t = state.cfg.train
    start = time.perf_counter()
    val_tta = epoch_tta(t, epoch)
    if cache is None:
        stats = train_one_epoch(state, d, epoch, progress=progress)
    else:
        stats = head_epoch(state, cache, d.train_labels, epoch)
    if cache is not None and cache.val_tta == val_tta:
        stats.update(head_validate(state, cache, d.val_labels))
    else:
        stats.update(validate(state.model, d.val_images, d.val_labels, state.pp, state.runtime,
                              t.eval_batch_size, val_tta))
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch, "loss": stats["loss"], "accuracy": stats["accuracy"],
        "val_loss": stats["val_loss"], "val_accuracy": stats["val_accuracy"], "lr": state.lr,
        "seconds": seconds, "elapsed_seconds": elapsed + seconds,
        "train_images_per_s": stats["train_images_per_s"], "val_tta": val_tta,
    }
