"""The in-memory dataset every reader produces, its split names, and the errors ingest raises.

A `FerData` holds uint8 images (N, 48, 48), integer labels into `class_names`, a
split name and the original id per image - and, for FER+ sources, the ten crowd
vote counts per image (`votes`, in `labels.FERPLUS_VOTE_COLUMNS` order). A FER+
image whose votes give no majority emotion keeps its votes (the soft-label
training modes can use it) with label `UNKNOWN` or `NOT_A_FACE`; `labeled()`
drops those, and every evaluation scores only labeled images.

Depends on: errors, labels; numpy (scikit-learn for the stratified subsets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import UserError
from ..core.labels import EMOTIONS

# Split names, in one place. FER2013's three, in their order:
TRAIN_SPLIT = "Training"
SPLIT_ORDER = (TRAIN_SPLIT, "PublicTest", "PrivateTest")
# FER+ names the same three splits after its folders; either name finds the split.
FERPLUS_SPLITS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
SPLIT_ALIASES = {**FERPLUS_SPLITS, **{v: k for k, v in FERPLUS_SPLITS.items()}}
# What 'auto' means: validation selects models (PublicTest, else a generic name) ...
VAL_SPLITS = ("PublicTest", "test", "val", "valid", "validation")
# ... and evaluation reports the blind test first.
EVAL_SPLITS = ("PrivateTest", "PublicTest", "test", "val", "valid", "validation")
# Labels of FER+ images that have votes but no majority emotion (the official rule's
# "unknown" and "not a face"); they never reach an evaluation.
UNKNOWN, NOT_A_FACE = -1, -2


class DataError(UserError, ValueError):
    """Bad or missing input data. The message names the file, row or member and the reason."""


@dataclass(frozen=True)
class FerData:
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, ids into class_names (FER+: UNKNOWN / NOT_A_FACE too)
    splits: np.ndarray  # (N,) str: Training / PublicTest / PrivateTest / other names
    ids: np.ndarray  # (N,) str: original file name, CSV line or array index
    class_names: tuple[str, ...] = EMOTIONS
    votes: np.ndarray | None = None  # (N, 10) int: FER+ crowd votes, else None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def split_names(self) -> list[str]:
        present = set(self.splits.tolist())
        order = [*SPLIT_ORDER, *FERPLUS_SPLITS.values()]
        known = [s for s in order if s in present]
        return known + sorted(present - set(known))

    def subset(self, index: np.ndarray) -> FerData:
        return FerData(
            self.images[index], self.labels[index], self.splits[index], self.ids[index],
            self.class_names, None if self.votes is None else self.votes[index],
        )

    def labeled(self) -> FerData:
        """Only the images with a class label (FER+: a majority emotion)."""
        keep = self.labels >= 0
        return self if keep.all() else self.subset(np.flatnonzero(keep))

    def resolve_split(self, name: str) -> str | None:
        """The split's name in this data: itself, or its FER2013/FER+ alias; None if absent."""
        for candidate in (name, SPLIT_ALIASES.get(name)):
            if candidate is not None and candidate in self.split_names:
                return candidate
        return None

    def split(self, name: str) -> FerData:
        found = self.resolve_split(name)
        if found is None:
            raise DataError(
                f"split {name!r} is not in this data; splits present: "
                f"{', '.join(self.split_names) or 'none'}"
            )
        return self.subset(np.flatnonzero(self.splits == found))

    def class_counts(self) -> dict[str, list[int]]:
        """Labeled images per class for each split, in class-id order."""
        k = len(self.class_names)
        out = {}
        for s in self.split_names:
            labels = self.labels[self.splits == s]
            out[s] = np.bincount(labels[labels >= 0], minlength=k).tolist()
        return out


@dataclass
class LoadSummary:
    """What ingest did besides reading (skipped bad items, converted images): the lines
    `ferlab prepare` prints. Not a "report": in ferlab that word is a page to open
    (evaluation/report.py, study/report.py) or the seed's classification-report table."""

    source: str
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the user
    converted: int = 0  # images resized to 48x48 and/or turned to grayscale
    ignored: int = 0  # non-image files passed over
    notes: list[str] = field(default_factory=list)  # what a reader dropped on purpose, and why

    def bad(self, message: str, skip_bad: bool) -> None:
        if not skip_bad:
            raise DataError(message)
        self.skipped += 1
        if len(self.errors) < 5:
            self.errors.append(message)

    def lines(self) -> list[str]:
        out = list(self.notes)
        if self.converted:
            out.append(f"converted {self.converted} images to 48x48 grayscale")
        if self.ignored:
            out.append(f"ignored {self.ignored} non-image files")
        if self.skipped:
            out.append(f"skipped {self.skipped} bad items; first: " + " | ".join(self.errors))
        return out


def select_split(data: FerData, wanted: str, fallbacks: tuple[str, ...], purpose: str) -> str:
    """Resolve 'auto' to the first of `fallbacks` present; check an explicit name exists.
    Returns the split's name in this data (FER+ data answers PublicTest with FER2013Valid)."""
    if wanted != "auto":
        found = data.resolve_split(wanted)
        if found is None:
            data.split(wanted)  # raises, naming the splits present
        return found
    for name in fallbacks:
        found = data.resolve_split(name)
        if found is not None:
            return found
    raise DataError(
        f"no {purpose} split: looked for {', '.join(fallbacks)}; splits present: "
        f"{', '.join(data.split_names) or 'none'}"
    )


def assemble(images: list, labels: list, splits: list, ids: list,
             class_names: tuple[str, ...] = EMOTIONS, votes: list | None = None) -> FerData:
    from .preprocess import IMAGE_SIZE

    return FerData(
        np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        np.array(labels, dtype=np.int64),
        np.array(splits, dtype=str),
        np.array(ids, dtype=str),
        class_names,
        None if votes is None else np.array(votes, dtype=np.int16).reshape(-1, 10),
    )


# --------------------------------------------------------------------------- subsets


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset of size n (sorted), fixed by seed.

    FER2013 folder walks come sorted by class, so "the first N" would be one class.
    """
    if n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise DataError(f"--limit must be positive, got {n}")
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels)
    if n < np.count_nonzero(counts) or counts[counts > 0].min() < 2:
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(index, size=n, replace=False))
    chosen, _ = train_test_split(index, train_size=n, stratify=labels, random_state=seed)
    return np.sort(chosen)


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, stratified by class where every class has 2+ images."""
    if not 0 < fraction < 1:
        raise DataError(f"data.holdout must be between 0 and 1, got {fraction}")
    n_val = max(1, round(len(labels) * fraction))
    if len(labels) - n_val < 2:
        raise DataError(f"{len(labels)} training images are too few to hold out a validation set")
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and n_val >= np.count_nonzero(counts) else None
    tr, va = train_test_split(index, test_size=n_val, stratify=stratify, random_state=seed)
    return np.sort(tr), np.sort(va)


def format_counts(data: FerData) -> str:
    """Images per split and class, as a table; FER+ data adds the images its majority rule
    drops (unknown, not a face) and the kept total."""
    names = data.class_names
    extra = data.votes is not None
    head = (f"{'split':<14}" + "".join(f"{n[:9]:>10}" for n in names)
            + (f"{'|unknown':>10}{'NF':>6}" if extra else "") + f"{'kept' if extra else 'total':>10}")
    rows = [head, "-" * len(head)]
    for split, counts in data.class_counts().items():
        row = f"{split:<14}" + "".join(f"{c:>10,}" for c in counts)
        if extra:
            labels = data.labels[data.splits == split]
            row += f"{int((labels == UNKNOWN).sum()):>10,}{int((labels == NOT_A_FACE).sum()):>6,}"
        rows.append(row + f"{sum(counts):>10,}")
    return "\n".join(rows)
