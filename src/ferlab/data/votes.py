"""FER+ crowd votes -> labels and training targets, by the FER+ paper's rules.

Ten annotators voted per face over `labels.FERPLUS_VOTE_COLUMNS` (8 emotions,
unknown, not-a-face). Every rule starts with the official outlier removal - a
count of 1 or less becomes 0 - and then (Barsoum et al. 2016, "Training Deep
Networks for Facial Expression Recognition with Crowd-Sourced Label
Distribution"; FERPlus `src/ferplus.py`):

* `majority`: the label is the column holding more than half of what remains;
  otherwise unknown. Validation and test always use this label.
* `crossentropy` / `probability`: keep the largest counts (ties together, at most
  three emotions) until they hold 75% of the votes; a face whose kept votes are
  half or less of all, or that needs more than three, is unknown. The target is
  the kept votes' distribution: `crossentropy` trains on it as a soft target,
  `probability` draws a one-hot label from it each epoch.
* `multi_target`: every column with at least 30% of the votes is an acceptable
  answer (target = the set of them); unknown if they hold half or less.

A face whose result is unknown or not-a-face is left out of training in that mode.

Depends on: errors, labels, this package's core (the UNKNOWN / NOT_A_FACE label values); numpy.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.labels import FERPLUS_EMOTIONS
from .core import NOT_A_FACE, UNKNOWN

LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
N_EMOTIONS = len(FERPLUS_EMOTIONS)  # columns 8 and 9 are unknown and not-a-face
_UNKNOWN_COLUMN, _NF_COLUMN = N_EMOTIONS, N_EMOTIONS + 1


def remove_outliers(votes: np.ndarray) -> np.ndarray:
    """Counts of one vote or none become 0 (one annotator alone is taken as noise)."""
    v = np.asarray(votes, dtype=np.float64).copy()
    v[v <= 1] = 0
    return v


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The official majority label per face: a FER+ emotion id, UNKNOWN or NOT_A_FACE."""
    v = remove_outliers(np.atleast_2d(votes))
    total, top, column = v.sum(1), v.max(1), v.argmax(1)
    labels = np.where(top > 0.5 * total, column, _UNKNOWN_COLUMN)
    return np.select([labels == _UNKNOWN_COLUMN, labels == _NF_COLUMN], [UNKNOWN, NOT_A_FACE],
                     labels).astype(np.int64)


def _top_share(row: np.ndarray) -> np.ndarray | None:
    """crossentropy/probability rule for one face: the kept counts (10), or None (unknown)."""
    raw, kept = row.copy(), np.zeros_like(row)
    total, part, count = row.sum(), 0.0, 0
    while part < 0.75 * total and count < 3:
        top = raw.max()
        for i in np.flatnonzero(raw == top):  # ties enter together, in column order
            kept[i], raw[i] = top, 0
            part += top
            count += 1
            if i >= _UNKNOWN_COLUMN:  # unknown / not-a-face among the largest: stop here
                if kept.sum() > top:  # emotions came first: keep them, not this column
                    kept[i] = 0
                    count -= 1
                return None if kept.sum() <= 0.5 * total or count > 3 else kept
    return None if kept.sum() <= 0.5 * total or count > 3 else kept


def _multi_target(row: np.ndarray) -> np.ndarray | None:
    kept = np.where(row >= 0.3 * row.sum(), row, 0)
    return None if kept.sum() <= 0.5 * row.sum() else kept


def vote_targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(targets (K, 8) float32 summing to 1, indices (K,) of the faces kept) for a mode.

    `majority` gives one-hot targets of the majority label; `multi_target` a uniform
    distribution over the acceptable emotions (the loss reads its support).
    """
    if mode not in LABEL_MODES:
        raise InputError(f"data.labels must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    v = remove_outliers(np.atleast_2d(votes))
    if mode == "majority":
        labels = majority_labels(votes)
        keep = np.flatnonzero(labels >= 0)
        return np.eye(N_EMOTIONS, dtype=np.float32)[labels[keep]], keep
    rule = _multi_target if mode == "multi_target" else _top_share
    targets, keep = [], []
    for i, row in enumerate(v):
        kept = rule(row)
        if kept is None or kept.argmax() >= _UNKNOWN_COLUMN:
            continue
        emotions = kept[:N_EMOTIONS] if mode != "multi_target" else (kept[:N_EMOTIONS] > 0)
        targets.append(emotions / emotions.sum())
        keep.append(i)
    return np.array(targets, dtype=np.float32).reshape(-1, N_EMOTIONS), np.array(keep, dtype=np.int64)
