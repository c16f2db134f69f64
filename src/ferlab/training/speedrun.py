"""`ferlab speedrun`: train within a wall-clock budget and report time to accuracy.

Depends on: errors, config, data, evaluation, files, training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.config import Config, replace
from ..core.errors import InputError
from ..core.files import atomic_write_text
from ..data import load_dataset
from ..evaluation.scores import evaluate
from ..inference.checkpoint import load_checkpoint
from . import train

THRESHOLDS = (0.55, 0.60, 0.63, 0.65, 0.68, 0.70)


def time_to_accuracy(
    history: list[dict[str, Any]], thresholds: tuple[float, ...] = THRESHOLDS
) -> list[dict[str, Any]]:
    """For each threshold: the first epoch and minutes at which validation accuracy reached it."""
    rows = []
    for target in thresholds:
        hit = next((h for h in history if h["val_accuracy"] >= target), None)
        rows.append({
            "target": target,
            "epoch": hit["epoch"] if hit else None,
            "minutes": hit["elapsed_seconds"] / 60 if hit else None,
            "tta": hit.get("val_tta") if hit else None,
        })
    return rows


def format_table(rows: list[dict[str, Any]], history: list[dict[str, Any]]) -> str:
    lines = [f"{'val accuracy':<14}{'minutes':>9}{'epoch':>7}{'TTA':>9}"]
    for r in rows:
        if r["epoch"] is None:
            lines.append(f">= {r['target']:.0%}{'':<8}{'-':>9}{'-':>7}")
        else:
            lines.append(f">= {r['target']:.0%}{'':<8}{r['minutes']:>9.2f}{r['epoch']:>7d}"
                         f"{r.get('tta') or '':>9}")
    if history:
        best = max(history, key=lambda h: h["val_accuracy"])
        lines.append(
            f"final: val accuracy {history[-1]['val_accuracy']:.4f} after {len(history)} epochs, "
            f"{history[-1]['elapsed_seconds'] / 60:.2f} min; best {best['val_accuracy']:.4f} "
            f"(epoch {best['epoch']})"
        )
    return "\n".join(lines)


def speedrun(
    cfg: Config,
    budget_minutes: float,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: print(s, flush=True),
) -> list[dict[str, Any]]:
    """Train with the schedule fitted to the budget; save and print the time-to-accuracy table."""
    if budget_minutes <= 0:
        raise InputError(f"--budget-minutes must be positive, got {budget_minutes}")
    cfg = replace(cfg, "train", budget_minutes=float(budget_minutes))
    start = time.perf_counter()
    history = train(cfg, out_dir, resume=resume, progress=progress, log=log, run_name="speedrun")
    wall = time.perf_counter() - start
    rows = time_to_accuracy(history)
    log(format_table(rows, history))
    log(f"wall time including data loading: {wall / 60:.2f} min")
    result: dict[str, Any] = {"time_to_accuracy": rows, "wall_minutes": wall / 60}
    if history and out_dir is not None:
        # Per-epoch validation uses the recipe's cheap TTA; the kept model is also scored
        # with ten-crop TTA once, after the budget (not counted in it).
        loaded = load_checkpoint(Path(out_dir) / "best.pt")
        val_split = loaded.meta.get("val_split", "auto")
        data, _ = load_dataset(cfg.data.source, classes=cfg.data.classes)
        if val_split not in data.split_names:  # a held-out share of Training: not a split to rescore
            return history
        tencrop = evaluate(loaded, data, val_split, tta="tencrop")
        result["best_tencrop"] = {"split": tencrop["split"], "accuracy": tencrop["accuracy"],
                                  "macro_f1": tencrop["macro_f1"]}
        log(f"best checkpoint with ten-crop TTA: {tencrop['split']} accuracy {tencrop['accuracy']:.4f}, "
            f"macro F1 {tencrop['macro_f1']:.4f}")
        atomic_write_text(Path(out_dir) / "time_to_accuracy.json", json.dumps(result, indent=1))
    return history
