"""Calibration, the workflow: fit a model's confidence temperature on a validation split
and store it in the model file (what `ferlab calibrate` runs, and what training does
after its last epoch). The maths (fitting, applying and scoring a temperature) is in
`temperature.py` beside it; this module only decides which faces, which TTA and where
the result goes.

Depends on: core (errors, files), data (splits, the run's holdout), checkpoint,
classifier, shipped, temperature; export (ONNX metadata, only for .onnx files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.files import check_writable
from ..data import VAL_SPLITS, FerData, holdout_split, load_dataset, select_split
from .checkpoint import read_checkpoint, save_checkpoint
from .classifier import Classifier, load_classifier
from .shipped import is_shipped
from .temperature import calibration_entry
from .tta import check_tta


def run_holdout(classifier: Classifier, data: FerData) -> tuple[FerData, str] | None:
    """Bare class folders have no evaluation split: a run trained on them validated on a
    stratified share of its training images (`data.holdout`, fixed by `train.seed`). That
    share, rebuilt from the checkpoint's own config, marked as split holdout-<train split>;
    None where the model carries no such config or the data has no such split."""
    config = getattr(getattr(classifier, "loaded", None), "meta", {}).get("config") or {}
    data_cfg, train_cfg = config.get("data") or {}, config.get("train") or {}
    if data_cfg.get("val_split", "auto") != "auto" or data.votes is not None:
        return None
    train_name = data.resolve_split(str(data_cfg.get("train_split", "Training")))
    if train_name is None:
        return None
    index = np.flatnonzero((data.splits == train_name) & (data.labels >= 0))
    _, held = holdout_split(data.labels[index], float(data_cfg.get("holdout", 0.15)),
                            int(train_cfg.get("seed", 0)))
    name = f"holdout-{train_name}"
    splits = data.splits.astype(object)
    splits[index[held]] = name
    return FerData(data.images, data.labels, splits.astype(str), data.ids, data.class_names), name


# One temperature fitted on a handful of faces is noise; under this many, training leaves a
# run uncalibrated (and says so) and `ferlab calibrate` refuses.
MIN_CALIBRATION_FACES = 50


def calibrate_classifier(classifier: Any, images: np.ndarray, labels: np.ndarray, *, split: str,
                         tta: str | None = None) -> dict[str, Any]:
    """Fit a classifier's temperature on labelled faces with its own (or the given) TTA."""
    if len(labels) < MIN_CALIBRATION_FACES:
        raise InputError(f"split {split}: {len(labels)} labelled faces are too few to fit a confidence "
                         f"temperature (at least {MIN_CALIBRATION_FACES})")
    tta = classifier.tta if tta is None else tta
    probs = classifier.predict_proba(images, tta=tta, calibrated=False)
    return calibration_entry(probs, labels, split=split, tta=tta)


def write_calibration(path: str | Path, entry: dict[str, Any], out: str | Path | None = None) -> Path:
    """Store `entry` in a checkpoint (.pt) or ferlab ONNX file, at `out` or in place; the
    weights are copied unchanged. Written atomically: a failure leaves the old file whole."""
    path = Path(path)
    out = Path(out) if out is not None else path
    if path.suffix == ".onnx":
        from ..inference.export import update_onnx_metadata

        return update_onnx_metadata(path, out, {"calibration": entry})
    ckpt = read_checkpoint(path)
    ckpt["calibration"] = entry
    save_checkpoint(ckpt, out)
    return out


def calibrate_model(
    ref: str | Path | None, source: str, split: str = "auto", *, out: str | Path | None = None,
    tta: str | None = None, device: str = "auto", precision: str = "auto", skip_bad: bool = False,
) -> tuple[dict[str, Any], Path]:
    """What `ferlab calibrate` runs: fit the model's temperature on a validation split of
    `source` ('auto': PublicTest / FER2013Valid, never the test split) and store it."""
    if not source:
        raise InputError("--data is required: the cache or source holding the validation split")
    check_tta(tta, "--tta")
    classifier = load_classifier(ref, device=device, precision=precision, calibrated=False)
    if out is None and is_shipped(classifier.path):
        raise InputError(f"{classifier.path.name} is a shipped model: pass -o FILE for the calibrated copy")
    target = Path(out) if out is not None else classifier.path
    kind = ".onnx" if classifier.path.suffix == ".onnx" else ".pt"
    if target.suffix != kind:  # the copy is the same kind of file as the model
        raise InputError(f"{target}: the calibrated copy of {classifier.path.name} must be a {kind} file")
    check_writable(target.parent)  # before the data is read and the faces scored
    data, _ = load_dataset(source, skip_bad=skip_bad, classes=classifier.class_names)
    if tuple(data.class_names) != tuple(classifier.class_names):
        raise InputError(f"{source}: its classes ({', '.join(data.class_names)}) differ from the "
                         f"model's ({', '.join(classifier.class_names)}); calibrate on data with the "
                         "model's own label set")
    if split == "auto" and not any(data.resolve_split(s) for s in VAL_SPLITS):
        data, split = run_holdout(classifier, data) or (data, split)  # the run's own validation
    split = select_split(data, split, VAL_SPLITS, "calibration")
    part = data.split(split).labeled()
    entry = calibrate_classifier(classifier, part.images, part.labels, split=split, tta=tta)
    return entry, write_calibration(classifier.path, entry, target)
