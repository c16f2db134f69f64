"""Evaluation: accuracy, per-class precision/recall/F1/support, averages, confusion matrix,
and how far the confidence can be trusted (ECE, NLL, Brier; raw and calibrated).

`evaluate` returns a plain dict (the JSON that `ferlab evaluate --json` prints);
`write_report` saves it with the confusion-matrix heatmap and the reliability
diagram; `format_report` renders the seed's classification-report tables.

Depends on: core (errors, files, labels, runtime), data (splits), inference (any model,
per-member scores of an ensemble, the calibration maths and a run's holdout), plots;
scikit-learn for the metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..core.errors import InputError
from ..core.files import atomic_write_text
from ..core.labels import class_mapping
from ..core.runtime import Runtime
from ..data import EVAL_SPLITS, FerData, load_dataset, select_split
from ..inference.calibration import run_holdout
from ..inference.checkpoint import LoadedModel
from ..inference.classifier import Classifier, as_classifier, load_classifier
from ..inference.ensemble_file import ensemble_members, member_probabilities
from ..inference.shipped import is_shipped
from ..inference.temperature import apply_temperature, calibration_metrics
from ..inference.torch_proba import check_tta
from .plots import plot_confusion_matrix, plot_reliability


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    labels = list(range(len(class_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                   "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
    }
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        out[f"{average}_avg"] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    out["macro_f1"] = out["macro_avg"]["f1"]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["class_names"] = list(class_names)
    return out


@dataclass(frozen=True)
class Scored:
    """What scoring one split produced, for reports that look at faces (report.py)."""

    result: dict[str, Any]  # what `evaluate` returns
    images: np.ndarray  # the faces scored (N, H, W) uint8
    labels: np.ndarray  # true class ids, in result["class_names"]
    predicted: np.ndarray  # predicted class ids, in result["class_names"]
    confidence: np.ndarray  # the (calibrated) probability of the predicted class
    model_ids: np.ndarray  # the predicted class's id in the model's own classes


def evaluate(
    model: Classifier | LoadedModel | str | Path | None,
    data: FerData,
    split: str = "auto",
    *,
    runtime: Runtime | None = None,
    tta: str | None = None,
) -> dict[str, Any]:
    """Score a model on one split of `data`. tta=None uses the model's own setting.

    `model` is anything `load_classifier` returns (a PyTorch checkpoint or an ONNX
    export, e.g. the int8 model you deploy), a `load_checkpoint` result, or a model
    reference (a path, run folder or shipped model's name).
    """
    return score(as_classifier(model, runtime), data, split, tta=tta).result


def score(classifier: Classifier, data: FerData, split: str = "auto", *, tta: str | None = None) -> Scored:
    """`evaluate`, keeping the faces and each one's prediction."""
    model_names, data_names = tuple(classifier.class_names), tuple(data.class_names)
    mapping = None if model_names == data_names else shared_classes(model_names, data_names)
    split = select_split(data, split, EVAL_SPLITS, "evaluation")
    part = data.split(split).labeled()
    tta = classifier.tta if tta is None else check_tta(tta, "--tta")
    if mapping is not None:  # score only faces whose class the model knows
        part = part.subset(np.flatnonzero(np.isin(part.labels, list(mapping.values()))))
    result = {"split": split, "checkpoint": str(classifier.path), "tta": tta}
    if ensemble_members(classifier):
        members = member_probabilities(classifier, part.images)
        result["members"] = member_scores(classifier, members, part.labels, mapping)
        # The ensemble's forward is this mean; with no outer TTA it is taken from the
        # members' scores rather than running every member a second time.
        raw = (np.mean(members, 0) if tta == "none"
               else classifier.predict_proba(part.images, tta=tta, calibrated=False))
    else:
        raw = classifier.predict_proba(part.images, tta=tta, calibrated=False)
    probs = apply_temperature(raw, classifier.temperature)
    if mapping is None:
        pred = probs.argmax(1)
        result.update(classification_metrics(part.labels, pred, model_names))
        result["calibration"] = confidence_report(raw, part.labels, classifier.temperature)
        return Scored(result, part.images, part.labels, pred, probs.max(1), pred)
    # Another label set (a FER2013 model on FER+ labels, or back): the model's answer is its
    # most probable class among those both sets share, scored in the data's class names.
    pred, chosen = mapped_prediction(probs, mapping)
    data_ids = sorted(mapping.values())
    compact = np.full(len(data_names), -1, dtype=np.int64)  # data id -> id among the shared classes
    compact[data_ids] = np.arange(len(data_ids))
    result.update(classification_metrics(compact[part.labels], compact[pred],
                                         tuple(data_names[d] for d in data_ids)))
    result["class_mapping"] = {model_names[m]: data_names[d] for m, d in mapping.items()}
    result["unmapped"] = {"model": [n for i, n in enumerate(model_names) if i not in mapping],
                          "data": [n for i, n in enumerate(data_names) if i not in mapping.values()]}
    return Scored(result, part.images, compact[part.labels], compact[pred],
                  probs[np.arange(len(probs)), chosen], chosen)


def mapped_prediction(probs: np.ndarray, mapping: dict[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted data class ids, chosen model class ids): with a mapping, the most probable
    of the classes both label sets share."""
    if mapping is None:
        pred = probs.argmax(1)
        return pred, pred
    model_ids = np.array(sorted(mapping))
    chosen = model_ids[probs[:, model_ids].argmax(1)]
    return np.array([mapping[int(m)] for m in chosen], dtype=np.int64), chosen


def member_scores(classifier: Classifier, member_probs: list[np.ndarray], labels: np.ndarray,
                  mapping: dict[int, int] | None) -> list[dict[str, Any]]:
    """Each ensemble member's accuracy on the same faces (its own TTA and temperature)."""
    names = [name for name, _ in ensemble_members(classifier)]
    return [{"model": name, "accuracy": float((mapped_prediction(p, mapping)[0] == labels).mean())}
            for name, p in zip(names, member_probs)]


def confidence_report(raw: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE, NLL, Brier and reliability bins of the raw scores and, where the model carries a
    temperature other than 1, of the calibrated ones."""
    out: dict[str, Any] = {"temperature": float(temperature), "raw": calibration_metrics(raw, labels)}
    if temperature != 1.0:
        out["calibrated"] = calibration_metrics(apply_temperature(raw, temperature), labels)
    return out


def shared_classes(model_names: tuple[str, ...], data_names: tuple[str, ...]) -> dict[int, int]:
    """model class id -> data class id for the emotions both label sets name (FER2013's
    'happy' is FER+'s 'happiness'); an error when the sets share too little to compare."""
    mapping = class_mapping(model_names, data_names)
    if len(mapping) < 2:
        raise InputError(
            f"the data's classes ({', '.join(data_names)}) differ from the model's "
            f"({', '.join(model_names)}) and share fewer than two emotions"
        )
    return mapping


def format_report(result: dict[str, Any]) -> str:
    """The classification report and confusion matrix as plain-text tables."""
    names = result["class_names"]
    width = max(12, max(len(n) for n in names) + 2)
    lines = [
        f"split {result['split']}: {result['n']} images, accuracy {result['accuracy']:.4f}, "
        f"macro F1 {result['macro_f1']:.4f}",
        "",
    ]
    for i, m in enumerate(result.get("members", [])):
        lines.append(f"  member {i}: accuracy {m['accuracy']:.4f}  {m['model']}")
    if result.get("members"):
        lines.append("")
    if "class_mapping" in result:
        pairs = ", ".join(f"{m} -> {d}" for m, d in result["class_mapping"].items())
        left = result["unmapped"]
        lines += [f"classes mapped (model -> data): {pairs}",
                  f"left out: model classes {', '.join(left['model']) or 'none'} (never predicted), "
                  f"data classes {', '.join(left['data']) or 'none'} (their faces not scored)", ""]
    lines += [
        f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name in names:
        m = result["per_class"][name]
        lines.append(f"{name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}"
                     f"{m['f1']:>10.4f}{m['support']:>10d}")
    lines.append("")
    lines.append(f"{'accuracy':<{width}}{'':>10}{'':>10}{result['accuracy']:>10.4f}{result['n']:>10d}")
    for average in ("macro", "weighted"):
        m = result[f"{average}_avg"]
        lines.append(f"{average + ' avg':<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}"
                     f"{m['f1']:>10.4f}{result['n']:>10d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    short = [n[:8] for n in names]
    lines.append(f"{'':<{width}}" + "".join(f"{s:>9}" for s in short))
    for name, row in zip(names, result["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>9d}" for v in row))
    cal = result.get("calibration")
    if cal:
        lines += ["", f"confidence ({len(cal['raw']['bins'])}-bin ECE; lower is better for all three)",
                  f"{'':<{width}}{'ECE':>10}{'NLL':>10}{'Brier':>10}"]
        rows = [("raw", cal["raw"])]
        if "calibrated" in cal:
            rows.append((f"T={cal['temperature']:.2f}", cal["calibrated"]))
        for label, m in rows:
            lines.append(f"{label:<{width}}{m['ece']:>10.4f}{m['nll']:>10.4f}{m['brier']:>10.4f}")
        if "calibrated" not in cal:
            lines.append("(the model carries no temperature: `ferlab calibrate MODEL --data ...` fits one)")
    return "\n".join(lines)


def write_report(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Save `eval_<split>.json`, `confusion_<split>.png` and (where the confidence was
    scored) `reliability_<split>.png` in out_dir; returns the first two."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"eval_{result['split']}.json"
    atomic_write_text(json_path, json.dumps(result, indent=1))
    png = plot_confusion_matrix(
        np.array(result["confusion_matrix"]), result["class_names"],
        out_dir / f"confusion_{result['split']}.png",
        f"{result['split']}: accuracy {result['accuracy']:.4f}",
    )
    cal = result.get("calibration")
    if cal:
        plot_reliability(reliability_curves(cal), out_dir / f"reliability_{result['split']}.png",
                         f"{result['split']}: reliability")
    return json_path, png


def reliability_curves(cal: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    curves = {f"raw (ECE {cal['raw']['ece']:.3f})": cal["raw"]["bins"]}
    if "calibrated" in cal:
        curves[f"T={cal['temperature']:.2f} (ECE {cal['calibrated']['ece']:.3f})"] = cal["calibrated"]["bins"]
    return curves


def evaluate_source(
    ref: str | Path | None,
    source: str,
    split: str = "auto",
    *,
    tta: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    skip_bad: bool = False,
    out: str | Path | None = None,
    calibrated: bool = True,
) -> tuple[Scored, Classifier, Path, Path]:
    """What `ferlab evaluate` runs: load any model reference, read `source` with the model's
    class names, score `split`, and save the report beside the model (for a shipped model,
    in the current folder). Returns (scored split, classifier, json path, heatmap path);
    report.py turns the scored split into the HTML page."""
    if not source:
        raise InputError("--data is required: the cache or source holding the split to score")
    check_tta(tta, "--tta")
    classifier = load_classifier(ref, device=device, precision=precision, calibrated=calibrated)
    # An image folder is read with the model's own class names (fer2013 or yours).
    data, _ = load_dataset(source, skip_bad=skip_bad, classes=classifier.class_names)
    if split == "auto" and not any(data.resolve_split(s) for s in EVAL_SPLITS):
        data, split = run_holdout(classifier, data) or (data, split)
    scored = score(classifier, data, split, tta=tta)
    if out is None:  # never write into the installed package
        out = Path(".") if is_shipped(classifier.path) else classifier.path.parent
    json_path, png = write_report(scored.result, out)
    return scored, classifier, json_path, png
