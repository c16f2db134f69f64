"""Training: `train(cfg)` runs a whole run and returns its history.

One epoch is `train_one_epoch`; validation is `validate`. The training split is
held on the device as one uint8 tensor; each batch is indexed, normalised by
`preprocess`, augmented by one batched affine warp, and run in channels_last
with bf16/fp16 autocast where the device supports it.

Every epoch writes `last.pt` (and `best.pt` when validation accuracy improves),
`history.csv`/`history.json` and the `plot_loss_acc` figure, each atomically, so
a run killed at any moment resumes from its last completed epoch. Each epoch's
randomness (shuffle, augmentation, dropout) is seeded from (seed, epoch), so a
resumed run repeats exactly what an uninterrupted one would have done.

Under `torchrun` (WORLD_SIZE > 1) the same code trains with DistributedDataParallel:
each rank takes its share of every batch, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .augment import augment_batch
from .checkpoint import checkpoint_dict, read_checkpoint, save_checkpoint, unwrap
from .config import Config, replace, save_config, to_dict
from .data import DataError, FerData, holdout_split, load_dataset, select_split, stratified_subset
from .distill import distillation_loss, load_teacher
from .files import atomic_write_text
from .finetune import adopt_init_model, apply_finetune, check_finetune, load_init_weights
from .inference import logits_and_probs
from .models import build_model
from .models.freeze import freeze_batchnorm_stats
from .plots import plot_loss_acc
from .preprocess import Preprocessing, preprocess
from .runtime import Runtime

HISTORY_FIELDS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
    "elapsed_seconds", "train_images_per_s", "val_tta",
)
VAL_FALLBACKS = ("PublicTest", "test", "val", "valid", "validation")


class RunError(RuntimeError):
    """A run folder that cannot be used as asked (exists already, or config changed)."""


# --------------------------------------------------------------------------- optimisation


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay),
    "adamw": lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay),
    "sgd": lambda p, t: torch.optim.SGD(
        p, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    ),
}


def _cosine(t, total: int) -> Callable[[int], float]:
    warm = max(1, int(t.warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


# Per-step schedules, keyed by `train.scheduler`; each gets (optimizer, train cfg, total steps).
SCHEDULERS: dict[str, Callable[..., Any]] = {
    "none": lambda o, t, n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0),
    "onecycle": lambda o, t, n: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=t.lr, total_steps=n, pct_start=t.warmup_fraction
    ),
    "cosine": lambda o, t, n: torch.optim.lr_scheduler.LambdaLR(o, _cosine(t, n)),
}


def make_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    if t.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    # Frozen parameters (transfer learning) stay out of the optimizer.
    return OPTIMIZERS[t.optimizer]([p for p in model.parameters() if p.requires_grad], t)


def make_scheduler(optimizer: torch.optim.Optimizer, t, total_steps: int):
    if t.scheduler not in SCHEDULERS:
        raise ValueError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got {t.scheduler!r}")
    return SCHEDULERS[t.scheduler](optimizer, t, max(1, total_steps))


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        if self.world == 1:
            return list(values)
        stacked = torch.stack([v.double() for v in values])
        dist.all_reduce(stacked)
        return list(stacked)


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    return Dist(rank, world), device_name


# --------------------------------------------------------------------------- epochs


def epoch_steps(n: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per epoch for n images; a last batch of one image (which breaks
    BatchNorm) is dropped."""
    per_rank, per_rank_batch = n // world, max(1, batch_size // world)
    steps = math.ceil(per_rank / per_rank_batch)
    if per_rank % per_rank_batch == 1 and steps > 1:
        steps -= 1
    return max(1, steps)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: Config,
    runtime: Runtime,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    pp: Preprocessing,
    dist_info: Dist = Dist(),
    progress: bool = False,
    max_steps: int | None = None,
    teacher: nn.Module | None = None,
) -> dict[str, float]:
    """One pass over the training tensors; returns loss, accuracy and images/s."""
    t = cfg.train
    model.train()
    freeze_batchnorm_stats(model)  # frozen layers (transfer learning, train.finetune) keep their stats
    seed = epoch_seed(t.seed, epoch)
    torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
    g = torch.Generator(device=runtime.device).manual_seed(seed)
    n = len(labels)
    perm = torch.randperm(n, generator=g, device=runtime.device)
    # Each rank takes every world-th sample, so a global batch is shared out evenly.
    perm = perm[: n - n % dist_info.world][dist_info.rank :: dist_info.world]
    per_rank_batch = max(1, t.batch_size // dist_info.world)
    steps = epoch_steps(n, t.batch_size, dist_info.world)
    if max_steps is not None:
        steps = min(steps, max_steps)

    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device)
    seen = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="batch", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    for step in range(steps):
        index = perm[step * per_rank_batch : (step + 1) * per_rank_batch]
        x = augment_batch(preprocess(images[index], pp), cfg.augment, g)
        y = labels[index]
        x = runtime.memory_format(x)
        with runtime.autocast():
            out = model(x)
            if teacher is None:
                loss = F.cross_entropy(out.float(), y, label_smoothing=t.label_smoothing)
            else:
                with torch.no_grad():
                    soft = teacher(x).float()
                loss = distillation_loss(out.float(), soft, y, t.distill_weight,
                                         t.distill_temperature, t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update()
            if step % 10 == 0 or step == steps - 1:  # .item() syncs the device: not every step
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    loss_total, correct_total, seen_total = dist_info.sum(
        loss_sum, correct, torch.tensor(float(seen), device=runtime.device)
    )
    seen_total = max(1.0, float(seen_total))
    return {
        "loss": float(loss_total) / seen_total,
        "accuracy": float(correct_total) / seen_total,
        "train_images_per_s": seen_total / max(seconds, 1e-9),
    }


@torch.no_grad()
def validate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    pp: Preprocessing,
    runtime: Runtime,
    batch_size: int = 1024,
    tta: str = "none",
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


# --------------------------------------------------------------------------- run folder


def default_run_dir(cfg: Config, name: str | None = None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name or cfg.model.name}-{stamp}"


def write_history(history: list[dict[str, Any]], out_dir: Path, title: str = "") -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "history.csv", buf.getvalue())
    atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    plot_loss_acc(history, out_dir / "loss_acc.png", title)


def _config_differences(a: dict, b: dict, ignore: set[str]) -> list[str]:
    diffs = []
    for section in a:
        for key in set(a[section]) | set(b.get(section, {})):
            name = f"{section}.{key}"
            if name not in ignore and a[section].get(key) != b.get(section, {}).get(key):
                diffs.append(f"{name}: {b.get(section, {}).get(key)!r} -> {a[section].get(key)!r}")
    return sorted(diffs)


# --------------------------------------------------------------------------- the run


@dataclass
class PreparedData:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    val_split: str


def prepare_data(cfg: Config, data: FerData | None, device: torch.device, log) -> PreparedData:
    if data is None:
        if not cfg.data.source:
            raise DataError("no training data: pass --data SOURCE (or set data.source)")
        data, report = load_dataset(cfg.data.source, skip_bad=cfg.data.skip_bad,
                                    classes=cfg.data.classes)
        for line in report.lines():
            log(line)
    train = data.split(cfg.data.train_split)
    if cfg.data.val_split == "auto" and not set(VAL_FALLBACKS) & set(data.split_names):
        # Own datasets often come as bare class folders: hold out a stratified share.
        keep, held = holdout_split(train.labels, cfg.data.holdout, cfg.train.seed)
        val, train = train.subset(held), train.subset(keep)
        val_name = f"holdout-{cfg.data.train_split}"
        log(f"no validation split in the data: holding out {len(held)} of "
            f"{len(held) + len(keep)} {cfg.data.train_split} images (data.holdout="
            f"{cfg.data.holdout:g}, stratified, fixed by train.seed)")
    else:
        val_name = select_split(data, cfg.data.val_split, VAL_FALLBACKS, "validation")
        val = data.split(val_name)
    if cfg.data.limit is not None:
        train = train.subset(stratified_subset(train.labels, cfg.data.limit, cfg.train.seed))

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return PreparedData(
        put(train.images), put(train.labels), put(val.images), put(val.labels),
        data.class_names, val_name,
    )


def check_train_settings(t) -> None:
    """Refuse bad TTA and distillation settings before any data is read, not epochs later."""
    from .config import ConfigError
    from .inference import TTA_MODES

    for name in ("tta", "late_tta"):
        if getattr(t, name) not in TTA_MODES:
            raise ConfigError(f"train.{name} must be one of {', '.join(TTA_MODES)}, got {getattr(t, name)!r}")
    if t.late_tta_epochs < 0:
        raise ConfigError(f"train.late_tta_epochs must be >= 0, got {t.late_tta_epochs}")
    if not 0.0 <= t.distill_weight <= 1.0:
        raise ConfigError(f"train.distill_weight must be between 0 and 1, got {t.distill_weight}")
    if t.distill_temperature <= 0:
        raise ConfigError(f"train.distill_temperature must be positive, got {t.distill_temperature}")
    check_finetune(t.finetune)


def epoch_tta(t, epoch: int) -> str:
    """The validation TTA of an epoch: `late_tta` in the last `late_tta_epochs`, else `tta`."""
    return t.late_tta if t.late_tta_epochs and epoch > t.epochs - t.late_tta_epochs else t.tta


def fit_epochs_to_budget(
    model: nn.Module, d: PreparedData, cfg: Config, runtime: Runtime, pp: Preprocessing, log,
    teacher: nn.Module | None = None,
) -> int:
    """Epochs that fit `train.budget_minutes`, from timing a few steps on a throwaway copy."""
    t = cfg.train
    probe = copy.deepcopy(model)
    opt = make_optimizer(probe, t)
    sched = make_scheduler(opt, t, 1000)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    steps = 12
    train_one_epoch(probe, d.train_images, d.train_labels, cfg, runtime, opt, sched, scaler,
                    0, pp, max_steps=2, teacher=teacher)  # warm-up: first steps pay one-off costs
    stats = train_one_epoch(probe, d.train_images, d.train_labels, cfg, runtime, opt, sched,
                            scaler, 0, pp, max_steps=steps, teacher=teacher)
    val_seconds = _validation_seconds(probe, d, pp, runtime, t, t.tta)
    # Checkpoints, history and the plot add about half a second per epoch.
    epoch_seconds = len(d.train_labels) / stats["train_images_per_s"] + val_seconds + 0.5
    budget = t.budget_minutes * 60
    if t.late_tta_epochs:
        late_extra = _validation_seconds(probe, d, pp, runtime, t, t.late_tta) - val_seconds
        budget -= t.late_tta_epochs * max(0.0, late_extra)
    epochs = max(1, int(budget / epoch_seconds))
    log(f"budget {t.budget_minutes:g} min: ~{epoch_seconds:.1f} s per epoch -> {epochs} epochs"
        + (f" (the last {t.late_tta_epochs} validated with {t.late_tta} TTA)" if t.late_tta_epochs else ""))
    return epochs


def _validation_seconds(model, d: PreparedData, pp, runtime, t, tta: str) -> float:
    """Seconds for one validation pass with `tta`, timed on up to 1,024 images and scaled."""
    n = min(len(d.val_labels), 1024)
    start = time.perf_counter()
    validate(model, d.val_images[:n], d.val_labels[:n], pp, runtime, t.eval_batch_size, tta)
    return (time.perf_counter() - start) * len(d.val_labels) / max(1, n)


def train(
    cfg: Config,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    data: FerData | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: print(s, flush=True),
    run_name: str | None = None,
    on_epoch_end: Callable[[dict[str, Any], nn.Module], None] | None = None,
) -> list[dict[str, Any]]:
    """Train as configured; return the per-epoch history (also saved in the run folder).

    `on_epoch_end(row, model)` is called on every rank after each epoch's files are
    written (a sweep reports to its pruner there; raising stops the run).
    """
    dist_info, device_name = init_distributed(cfg.train.device)
    if not dist_info.main:
        log = lambda *_: None  # noqa: E731  only rank 0 talks and writes
        progress = False
    check_train_settings(cfg.train)
    init_ckpt = None
    if cfg.train.init:
        init_ckpt = read_checkpoint(cfg.train.init)
        cfg = adopt_init_model(cfg, init_ckpt)
    out = Path(out_dir) if out_dir is not None else default_run_dir(cfg, run_name)
    if dist_info.world > 1 and out_dir is None:
        raise RunError("under torchrun, name the run folder with --out so all ranks agree")
    last = out / "last.pt"
    resume_ckpt = None
    if resume and last.exists():
        resume_ckpt = read_checkpoint(last)
        saved = resume_ckpt["config"]
        ignore = {"train.epochs"}
        if cfg.train.budget_minutes is not None:
            cfg = replace(cfg, "train", epochs=saved["train"]["epochs"])
        diffs = _config_differences(to_dict(cfg), saved, ignore | {"data.source"})
        if diffs:
            raise RunError(f"{out}: cannot resume with a changed config: {'; '.join(diffs)}")
    elif resume:
        log(f"{out}: nothing to resume (no last.pt); starting a new run")
    elif last.exists():
        raise RunError(f"{out} already holds a run; pass --resume to continue it or pick another --out")

    runtime = Runtime.create(device_name, cfg.train.precision, cfg.train.channels_last)
    pp = Preprocessing.from_dict(init_ckpt["preprocessing"]) if init_ckpt else Preprocessing()
    d = prepare_data(cfg, data, runtime.device, log)
    model_args = dict(cfg.model.args, num_classes=len(d.class_names))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, **model_args)
    if init_ckpt is not None and resume_ckpt is None:
        log(f"init from {cfg.train.init}: " + load_init_weights(model, init_ckpt, d.class_names))
    if init_ckpt is not None or cfg.train.finetune != "all":
        log(apply_finetune(model, cfg.train.finetune))
    model = runtime.prepare_model(model)
    teacher = None
    if cfg.train.teacher:
        teacher = load_teacher(cfg.train.teacher, d.class_names, pp, runtime)

    if cfg.train.budget_minutes is not None and resume_ckpt is None:
        epochs = fit_epochs_to_budget(model, d, cfg, runtime, pp, log, teacher)
        cfg = replace(cfg, "train", epochs=epochs)
    t = cfg.train
    steps_per_epoch = epoch_steps(len(d.train_labels), t.batch_size, dist_info.world)
    optimizer = make_optimizer(model, t)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch * t.epochs)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)

    history: list[dict[str, Any]] = []
    best_acc, start_epoch = -1.0, 1
    if resume_ckpt is not None:
        unwrap(model).load_state_dict(resume_ckpt["state_dict"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        history = list(resume_ckpt["history"])
        best_acc = max((h["val_accuracy"] for h in history), default=-1.0)
        start_epoch = resume_ckpt["epoch"] + 1
        log(f"resuming {out} after epoch {resume_ckpt['epoch']}")

    train_model: nn.Module = model
    if t.compile:
        train_model = torch.compile(model)
    if dist_info.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
        )

    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log(
        f"run {out}: {cfg.model.name}, {len(d.train_labels)} train / {len(d.val_labels)} "
        f"{d.val_split} images, {runtime.describe()}"
        + (f", {dist_info.world} processes" if dist_info.world > 1 else "")
    )
    elapsed = history[-1]["elapsed_seconds"] if history else 0.0
    title = f"{out.name}: {cfg.model.name}"
    for epoch in range(start_epoch, t.epochs + 1):
        start = time.perf_counter()
        stats = train_one_epoch(
            train_model, d.train_images, d.train_labels, cfg, runtime, optimizer, scheduler,
            scaler, epoch, pp, dist_info, progress, teacher=teacher,
        )
        val_tta = epoch_tta(t, epoch)
        stats.update(validate(model, d.val_images, d.val_labels, pp, runtime, t.eval_batch_size, val_tta))
        seconds = time.perf_counter() - start
        elapsed += seconds
        row = {
            "epoch": epoch, "loss": stats["loss"], "accuracy": stats["accuracy"],
            "val_loss": stats["val_loss"], "val_accuracy": stats["val_accuracy"],
            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
            "elapsed_seconds": elapsed, "train_images_per_s": stats["train_images_per_s"],
            "val_tta": val_tta,
        }
        history.append(row)
        log(
            f"epoch {epoch:3d}/{t.epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"lr {row['lr']:.2e}  {seconds:.1f}s" + (f"  ({val_tta} TTA)" if val_tta != t.tta else "")
        )
        if dist_info.main:
            metrics = {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            ckpt = checkpoint_dict(
                model, model_name=cfg.model.name, model_args=model_args,
                class_names=d.class_names, preprocessing=pp, epoch=epoch, metrics=metrics,
                config=to_dict(cfg), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), history=history, tta=val_tta,
                val_split=d.val_split,
            )
            if row["val_accuracy"] > best_acc:
                best_acc = row["val_accuracy"]
                save_checkpoint(ckpt, out / "best.pt")
            save_checkpoint(ckpt, last)
            write_history(history, out, title)
        if on_epoch_end is not None:
            on_epoch_end(row, model)
        if (t.budget_minutes is not None and epoch < t.epochs
                and elapsed > t.budget_minutes * 60 * 1.05):
            log(f"stopping: {elapsed / 60:.1f} min used of the {t.budget_minutes:g} min budget")
            break
    if dist_info.main and history:
        best = max(history, key=lambda h: h["val_accuracy"])
        summary = {
            "run": str(out), "model": cfg.model.name, "epochs": len(history),
            "best_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"],
            "val_split": d.val_split, "elapsed_seconds": history[-1]["elapsed_seconds"],
            "runtime": runtime.describe(), "world_size": dist_info.world,
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        log(f"best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}; saved in {out}")
    return history
