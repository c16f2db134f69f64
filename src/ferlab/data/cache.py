"""ferlab's cache: one compressed .npz (no pickle) that every command reads as fast as memory.

`ferlab prepare SOURCE -o fer.npz` writes it once; FER+ caches also keep every
image's ten raw vote counts, so any training mode can be chosen later.

Depends on: files (atomic writes), this package's core; numpy.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_path
from .core import DataError, FerData

CACHE_FORMAT = 1


def save_cache(data: FerData, path: str | Path) -> None:
    """Write the compact cache atomically: a temp file in the same folder, then rename."""
    extra = {} if data.votes is None else {"votes": data.votes.astype(np.int16)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            format_version=np.array(CACHE_FORMAT),
            images=data.images,
            labels=data.labels.astype(np.int64),
            splits=data.splits.astype(str),
            ids=data.ids.astype(str),
            class_names=np.array(data.class_names),
            **extra,
        )


def load_cache(path: str | Path) -> FerData:
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a ferlab cache (not a .npz archive); make one with "
                        "`ferlab prepare SOURCE -o FILE.npz`")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "labels", "splits", "ids", "class_names"} - set(z.files)
            if missing:
                raise DataError(
                    f"{path}: not a ferlab cache (missing {', '.join(sorted(missing))}); "
                    "make one with `ferlab prepare SOURCE -o FILE.npz`"
                )
            data = FerData(
                z["images"], z["labels"].astype(np.int64), z["splits"], z["ids"],
                tuple(str(c) for c in z["class_names"]),
                z["votes"].astype(np.int16) if "votes" in z.files else None,
            )
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read cache: {e}") from e
    if data.images.ndim != 3 or data.images.dtype != np.uint8:
        raise DataError(f"{path}: cache images must be uint8 (N, H, W), got {data.images.shape}")
    n = len(data.images)
    if any(len(a) != n for a in (data.labels, data.splits, data.ids)) or (
            data.votes is not None and data.votes.shape != (n, 10)):
        raise DataError(f"{path}: cache arrays disagree in length (images: {n})")
    return data
