"""ferlab's cache: one compressed .npz (no pickle) that every command reads as fast as memory.

`ferlab prepare SOURCE -o fer.npz` writes it once; FER+ caches also keep every
image's ten raw vote counts, so any training mode can be chosen later.

Depends on: files (atomic writes), this package's core; numpy.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..core.files import atomic_path
from .core import NOT_A_FACE, DataError, FerData

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
    if path.is_file():
        check_cache_size(path)
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
    classes = len(data.class_names)
    if not 2 <= classes <= MAX_CLASSES or len(set(data.class_names)) != classes:
        raise DataError(f"{path}: class_names must be 2 to {MAX_CLASSES} distinct names, got {classes}")
    if n and (data.labels.max() >= classes or data.labels.min() < NOT_A_FACE):
        bad = int(np.flatnonzero((data.labels >= classes) | (data.labels < NOT_A_FACE))[0])
        raise DataError(f"{path}: labels: row {bad} ({data.ids[bad]}) has label {data.labels[bad]}, "
                        f"outside 0-{classes - 1} for its {classes} classes")
    return data


MAX_CLASSES = 1000


def _available_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None


def check_cache_size(path: Path) -> int:
    """Bytes the cache's arrays decode to, from their .npy headers alone (nothing inflated);
    refused, naming the array, where a header disagrees with its member's declared size or
    the whole would not fit in the memory free now. A 1 KB file can claim gigabytes."""
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = header(f)
                    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if size > info.file_size:
                        raise DataError(f"{path}: array {info.filename} claims {size:,} bytes but its "
                                        f"member holds {info.file_size:,}: not a valid cache")
                    total += size
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read cache: {e}") from e
    free = _available_bytes()
    if free is not None and total > free:
        raise DataError(f"{path}: its arrays take {total / 1e9:,.1f} GB in memory, more than the "
                        f"{free / 1e9:,.1f} GB free now")
    return total
