"""A whole run: `train(cfg)` sets it up, runs its epochs and returns the history.

`train` reads like torchvision's reference scripts: settings checked, run folder
opened (or resumed), data on the device, model built (from `train.init` where
set), epoch count fitted to a budget where set, `TrainState` made, then
`run_epochs` - train, validate, save, report, once per epoch. Under `torchrun`
each rank runs the same code and only rank 0 writes the run folder.

Depends on: core (config, files, runtime), data (preprocess), models, inference
(checkpoint, classifier, calibration fit, TTA check), and this package's engine, state,
tensors, run_folder, budget, finetune, distill, distributed, features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import Config, ConfigError, check_ranges, replace, to_dict
from ..core.files import check_writable
from ..core.runtime import Runtime
from ..data import FerData
from ..data.preprocess import Preprocessing
from ..inference.calibration import MIN_CALIBRATION_FACES, calibrate_classifier, write_calibration
from ..inference.checkpoint import checkpoint_dict, load_checkpoint, read_checkpoint
from ..inference.classifier import TorchClassifier
from ..inference.temperature import format_calibration
from ..inference.torch_proba import check_tta
from ..models import build_model
from ..models.registry import check_forward
from .budget import fit_epochs_to_budget
from .distill import load_teacher
from .distributed import init_distributed
from .engine import run_epoch
from .features import FeatureCache, build_cache, why_not_cached
from .finetune import adopt_init_model, apply_finetune, check_finetune, load_init_weights
from .run_folder import RunError, RunFolder, default_run_dir
from .state import TrainState, epoch_steps
from .tensors import TrainData, prepare_data


def check_train_settings(cfg: Config) -> None:
    """Refuse bad ranges, TTA and distillation settings before any data is read, not epochs later."""
    check_ranges(cfg)
    t = cfg.train
    check_tta(t.tta, "train.tta")
    check_tta(t.late_tta, "train.late_tta")
    if t.late_tta_epochs < 0:
        raise ConfigError(f"train.late_tta_epochs must be >= 0, got {t.late_tta_epochs}")
    if not 0.0 <= t.distill_weight <= 1.0:
        raise ConfigError(f"train.distill_weight must be between 0 and 1, got {t.distill_weight}")
    if t.distill_temperature <= 0:
        raise ConfigError(f"train.distill_temperature must be positive, got {t.distill_temperature}")
    check_finetune(t.finetune)
    if t.init is None:  # with init, the checkpoint's architecture is used (checked when read)
        # Build once on the CPU: wrong types, out-of-range sizes and architectures that
        # cannot run are refused now, before the data is read and the run folder is made.
        check_forward(build_model(cfg.model.name, **cfg.model.args), cfg.model.name)


def format_row(row: dict[str, Any], t) -> str:
    return (f"epoch {row['epoch']:3d}/{t.epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f}s"
            + (f"  ({row['val_tta']} TTA)" if row["val_tta"] != t.tta else ""))


def epoch_checkpoint(state: TrainState, row: dict[str, Any], history: list[dict[str, Any]],
                     model_args: dict[str, Any], d: TrainData) -> dict[str, Any]:
    metrics = {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    return checkpoint_dict(
        state.model, model_name=state.cfg.model.name, model_args=model_args, class_names=d.class_names,
        preprocessing=state.pp, epoch=row["epoch"], metrics=metrics, config=to_dict(state.cfg),
        optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
        history=history, tta=row["val_tta"], val_split=d.val_split,
    )


def run_epochs(
    state: TrainState, d: TrainData, folder: RunFolder, history: list[dict[str, Any]], start_epoch: int,
    model_args: dict[str, Any], log: Callable[[str], None], progress: bool = False,
    on_epoch_end: Callable[[dict[str, Any], nn.Module], None] | None = None,
) -> list[dict[str, Any]]:
    """Epochs `start_epoch`..`train.epochs`: train, validate, save, report; stop at the budget."""
    t = state.cfg.train
    best_acc = max((h["val_accuracy"] for h in history), default=-1.0)
    elapsed = history[-1]["elapsed_seconds"] if history else 0.0
    title = f"{folder.path.name}: {state.cfg.model.name}"
    cache = frozen_features(state, d, log) if start_epoch <= t.epochs else None
    for epoch in range(start_epoch, t.epochs + 1):
        row = run_epoch(state, d, epoch, elapsed, progress, cache)
        elapsed = row["elapsed_seconds"]
        history.append(row)
        log(format_row(row, t))
        if folder.writes:
            ckpt = epoch_checkpoint(state, row, history, model_args, d)
            folder.save_epoch(ckpt, row["val_accuracy"] > best_acc, history, title)
            best_acc = max(best_acc, row["val_accuracy"])
        if on_epoch_end is not None:
            on_epoch_end(row, state.model)
        if t.budget_minutes is not None and epoch < t.epochs and elapsed > t.budget_minutes * 60 * 1.05:
            log(f"stopping: {elapsed / 60:.1f} min used of the {t.budget_minutes:g} min budget")
            break
    return history


def frozen_features(state: TrainState, d: TrainData, log: Callable[[str], None]) -> FeatureCache | None:
    """A frozen base's features of every face, computed once (features.py), where that applies."""
    cfg = state.cfg
    if not cfg.train.feature_cache or cfg.model.args.get("mode") != "frozen":
        return None
    reason = why_not_cached(cfg, state.model, state.dist.world)
    if reason is not None:
        log(f"frozen base, but its features are recomputed every epoch: {reason}")
        return None
    cache = build_cache(state, d, cfg.train.tta)
    log(f"frozen base: features of {len(d.train_labels)} training and {len(d.val_labels)} validation faces "
        f"computed once in {cache.seconds:.1f} s; only the head trains")
    return cache


def build_run_model(
    cfg: Config, class_names: tuple[str, ...], runtime: Runtime, init_ckpt: dict[str, Any] | None,
    load_init: bool, log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any]]:
    """The run's model on the device (seeded), from `train.init` where set, frozen as
    `train.finetune` says; and the builder arguments a checkpoint records."""
    model_args = dict(cfg.model.args, num_classes=len(class_names))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, **model_args)
    if init_ckpt is not None and load_init:
        log(f"init from {cfg.train.init}: " + load_init_weights(model, init_ckpt, class_names))
    if init_ckpt is not None or cfg.train.finetune != "all":
        log(apply_finetune(model, cfg.train.finetune))
    return runtime.prepare_model(model), model_args


def _silent(_: str) -> None:
    pass


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
        log, progress = _silent, False  # only rank 0 talks and writes
    check_train_settings(cfg)
    init_ckpt = read_checkpoint(cfg.train.init) if cfg.train.init else None
    if init_ckpt is not None:
        cfg = adopt_init_model(cfg, init_ckpt)
    if dist_info.world > 1 and out_dir is None:
        raise RunError("under torchrun, name the run folder with --out so all ranks agree")
    out = Path(out_dir) if out_dir is not None else default_run_dir(cfg, run_name)
    folder = RunFolder(out, writes=dist_info.main)
    if folder.writes:
        check_writable(out)  # before the data is read: an unwritable --out is one clear line
    # One writer per run folder: a second `train --out` (or a --resume) while this one
    # runs is refused with the PID that holds it.
    with folder.lock():
        cfg, resume_ckpt = folder.resume_from(cfg, resume, log)

        runtime = Runtime.create(device_name, cfg.train.precision, cfg.train.channels_last)
        pp = Preprocessing.from_dict(init_ckpt["preprocessing"]) if init_ckpt else Preprocessing()
        d = prepare_data(cfg, data, runtime.device, log)
        model, model_args = build_run_model(cfg, d.class_names, runtime, init_ckpt, resume_ckpt is None, log)
        teacher = load_teacher(cfg.train.teacher, d.class_names, pp, runtime) if cfg.train.teacher else None
        if cfg.train.budget_minutes is not None and resume_ckpt is None:
            cfg = replace(cfg, "train", epochs=fit_epochs_to_budget(model, d, cfg, runtime, pp, log, teacher))
        steps = epoch_steps(len(d.train_labels), cfg.train.batch_size, dist_info.world) * cfg.train.epochs
        state = TrainState.create(cfg, model, runtime, total_steps=steps, pp=pp, dist=dist_info,
                                  teacher=teacher)
        history, start_epoch = [], 1
        if resume_ckpt is not None:
            done = resume_ckpt["epoch"]
            if state.load(resume_ckpt, steps // cfg.train.epochs * done):
                log(f"train.epochs {resume_ckpt['config']['train']['epochs']} -> {cfg.train.epochs}: the "
                    f"{cfg.train.scheduler} schedule is rebuilt for {cfg.train.epochs} epochs and continues "
                    f"at its step for epoch {done + 1} (lr {state.lr:.2e})")
            history, start_epoch = list(resume_ckpt["history"]), done + 1
            log(f"resuming {folder.path} after epoch {done}")
        folder.start(cfg)
        log(f"run {folder.path}: {cfg.model.name}, {len(d.train_labels)} train / {len(d.val_labels)} "
            f"{d.val_split} images, {runtime.describe()}"
            + (f", {dist_info.world} processes" if dist_info.world > 1 else ""))
        history = run_epochs(state, d, folder, history, start_epoch, model_args, log, progress, on_epoch_end)
        summary = folder.finish(history, model=cfg.model.name, val_split=d.val_split,
                                runtime=runtime.describe(), world_size=dist_info.world)
        if summary:
            calibrate_run(folder, d, runtime, log)
            log(f"best val_accuracy {summary['best_val_accuracy']:.4f} at epoch {summary['best_epoch']}; "
                f"saved in {folder.path}")
    return history


def calibrate_run(folder: RunFolder, d: TrainData, runtime: Runtime, log: Callable[[str], None]) -> None:
    """Fit best.pt's and last.pt's confidence temperature on the validation split (each with
    its own TTA) and store it in them, so predictions from the run are calibrated."""
    labels = d.val_labels.cpu().numpy()
    if 0 < len(labels) < MIN_CALIBRATION_FACES:
        log(f"not calibrated: {len(labels)} validation faces are too few to fit a confidence temperature "
            f"(at least {MIN_CALIBRATION_FACES}); the run's probabilities are the network's own")
        return
    for file in (folder.path / "best.pt", folder.last):
        if not file.exists() or not len(labels):
            continue
        classifier = TorchClassifier(load_checkpoint(file, runtime.device), runtime, calibrated=False)
        entry = calibrate_classifier(classifier, d.val_images, labels, split=d.val_split)
        write_calibration(file, entry)
        log(f"{file.name}: {format_calibration(entry)}")
