"""The run folder: where a run's config, checkpoints, history, curves and summary live.

    config.yaml          the resolved config (written when the run starts)
    last.pt / best.pt    every epoch / the best validation accuracy so far
    history.csv/.json    one row per epoch; loss_acc.png is the seed's plot_loss_acc
    summary.json         best epoch and accuracy, time, runtime (written at the end)

Each file is written atomically, so a run killed at any moment resumes from its
last completed epoch. An existing run is never overwritten without `--resume`,
and a resume refuses a changed config (only `train.epochs` may change).

Depends on: errors, checkpoint, config, files, plots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.config import Config, replace, save_config, to_dict
from ..core.errors import UserError
from ..core.files import atomic_write_text, folder_lock
from ..evaluation.plots import plot_loss_acc
from ..inference.checkpoint import read_checkpoint, save_checkpoint

HISTORY_FIELDS = (
    "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
    "elapsed_seconds", "train_images_per_s", "val_tta",
)


class RunError(UserError, ValueError):
    """A run folder that cannot be used as asked (exists already, or config changed)."""


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


def config_differences(a: dict, b: dict, ignore: set[str]) -> list[str]:
    diffs = []
    for section in a:
        for key in set(a[section]) | set(b.get(section, {})):
            name = f"{section}.{key}"
            if name not in ignore and a[section].get(key) != b.get(section, {}).get(key):
                diffs.append(f"{name}: {b.get(section, {}).get(key)!r} -> {a[section].get(key)!r}")
    return sorted(diffs)


@dataclass
class RunFolder:
    path: Path
    writes: bool = True  # only rank 0 of a distributed run writes

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def resume_from(self, cfg: Config, resume: bool, log) -> tuple[Config, dict[str, Any] | None]:
        """The checkpoint to resume from (None for a fresh run) and the config to run with.

        A budgeted run keeps the epoch count it fitted the first time."""
        if resume and self.last.exists():
            ckpt = read_checkpoint(self.last)
            saved = ckpt["config"]
            if cfg.train.budget_minutes is not None:
                cfg = replace(cfg, "train", epochs=saved["train"]["epochs"])
            diffs = config_differences(to_dict(cfg), saved, {"train.epochs", "data.source"})
            if diffs:
                raise RunError(f"{self.path}: cannot resume with a changed config: {'; '.join(diffs)}")
            if cfg.train.epochs < ckpt["epoch"]:
                raise RunError(f"{self.path}: the run has already trained {ckpt['epoch']} epochs; --epochs "
                               f"{cfg.train.epochs} would shorten it (give at least {ckpt['epoch']})")
            return cfg, ckpt
        if resume:
            log(f"{self.path}: nothing to resume (no last.pt); starting a new run")
        elif self.last.exists():
            raise RunError(f"{self.path} already holds a run; pass --resume to continue it "
                           "or pick another --out")
        return cfg, None

    def lock(self) -> contextlib.AbstractContextManager:
        """Hold the folder for this run (files.folder_lock); a no-op for ranks that never write."""
        return folder_lock(self.path, "training run") if self.writes else contextlib.nullcontext()

    def start(self, cfg: Config) -> None:
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml")

    def save_epoch(self, ckpt: dict[str, Any], best: bool, history: list[dict[str, Any]], title: str) -> None:
        if not self.writes:
            return
        if best:
            save_checkpoint(ckpt, self.path / "best.pt")
        save_checkpoint(ckpt, self.last)
        write_history(history, self.path, title)

    def finish(self, history: list[dict[str, Any]], **facts: Any) -> dict[str, Any] | None:
        """Write summary.json: the best epoch and `facts` (model, split, runtime, ...)."""
        if not (self.writes and history):
            return None
        best = max(history, key=lambda h: h["val_accuracy"])
        summary = {
            "run": str(self.path), "model": facts.pop("model"), "epochs": len(history),
            "best_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"],
            "val_split": facts.pop("val_split"), "elapsed_seconds": history[-1]["elapsed_seconds"],
            **facts,
        }
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=1))
        return summary
