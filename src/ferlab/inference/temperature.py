"""Calibrated confidence: temperature scaling, and the figures that say how well it worked.

A network trained with cross-entropy is usually over-confident: of the faces it calls
"happy, 0.9", fewer than 90% are happy. Temperature scaling (Guo et al. 2017) divides
the logits by one number T fitted on validation so that the probabilities mean what
they say; the argmax, and so the accuracy, never changes.

ferlab fits T on the model's *output probabilities* (after its test-time
augmentation), as p_T ∝ p^(1/T): for one view that is exactly softmax(logits / T),
and it works the same for any classifier - a checkpoint, an ONNX export, an ensemble.
The fitted T is stored in the checkpoint (`calibration`) and in the ONNX metadata, and
`predict_proba` applies it unless the model was loaded with `calibrated=False`.

Figures (all on the majority labels): expected calibration error over 15 equal-width
confidence bins (ECE), negative log-likelihood (NLL) and the multi-class Brier score.

Depends on: errors, numpy and scipy (the one-dimensional optimiser).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError

ECE_BINS = 15
_EPS = 1e-12
# log T is searched in this range: T from 0.05 (sharpen a lot) to 20 (flatten a lot).
_LOG_T_RANGE = (np.log(0.05), np.log(20.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, C) sharpened (T < 1) or softened (T > 1): p^(1/T), renormalised."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or len(probs) == 0:
        return probs.astype(np.float32)
    logp = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of `labels` under p^(1/T)."""
    from scipy.optimize import minimize_scalar  # here: prediction never fits, and scipy is slow to import

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise InputError("calibration needs at least one labelled face")
    logp = np.log(np.clip(probs, _EPS, 1.0))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    best = minimize_scalar(nll, bounds=_LOG_T_RANGE, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: its range, the faces in it, their mean confidence and accuracy."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lo, hi]; the first also takes 0 so every face lands in exactly one.
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                    "confidence": float(conf[mask].mean()) if n else 0.0,
                    "accuracy": float(correct[mask].mean()) if n else 0.0})
    return out


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE (15 bins), NLL, Brier score and the reliability bins of probabilities (N, C)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"ece": 0.0, "nll": 0.0, "brier": 0.0, "bins": []}
    table = reliability_bins(probs, labels, bins)
    ece = sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), labels] = 1.0
    brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return {"ece": float(ece), "nll": _nll(probs, labels), "brier": brier, "bins": table}


def calibration_entry(probs: np.ndarray, labels: np.ndarray, *, split: str, tta: str) -> dict[str, Any]:
    """Fit T on (probs, labels) and describe it as checkpoints and ONNX metadata store it."""
    temperature = fit_temperature(probs, labels)
    before = calibration_metrics(probs, labels)
    after = calibration_metrics(apply_temperature(probs, temperature), labels)
    return {
        "method": "temperature",
        "temperature": temperature,
        "split": split,
        "tta": tta,
        "n": int(len(labels)),
        "before": {k: before[k] for k in ("ece", "nll", "brier")},
        "after": {k: after[k] for k in ("ece", "nll", "brier")},
    }


def stored_temperature(meta: dict[str, Any] | None) -> float:
    """The temperature a checkpoint or ONNX metadata carries (1.0: not calibrated)."""
    entry = (meta or {}).get("calibration") or {}
    t = entry.get("temperature", 1.0)
    if not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
        raise InputError(f"calibration temperature must be a positive number, got {t!r}")
    return float(t)


def format_calibration(entry: dict[str, Any]) -> str:
    b, a = entry["before"], entry["after"]
    return (f"temperature {entry['temperature']:.3f} fitted on {entry['split']} ({entry['n']} faces, "
            f"{entry['tta']} TTA): ECE {b['ece']:.4f} -> {a['ece']:.4f}, NLL {b['nll']:.4f} -> "
            f"{a['nll']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}")
