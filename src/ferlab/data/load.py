"""`load_dataset`: any supported source -> one `FerData`.

Sources: `fer2013.csv`; the FER2013 image-folder layout (folder or .zip); the
seed's `x_*.npy` arrays; your own class folders (`classes`); FER+'s official
layout (folder or .zip) or `fer2013.csv` + `fer2013new.csv` (`votes=`, or a folder
holding both); ferlab's own cache (`ferlab prepare ... -o fer.npz`).

Depends on: labels, this package's core, cache, fer2013 and ferplus readers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..core.labels import EMOTIONS, LABEL_SETS
from .cache import load_cache
from .core import TRAIN_SPLIT, DataError, FerData, LoadSummary
from .fer2013 import ARRAY_SPLITS, archive_members, read_arrays, read_csv, read_image_folder
from .ferplus import ferplus_folders, find_votes_file, read_ferplus_csv, read_ferplus_layout


def parse_classes(classes: str | Sequence[str]) -> str | tuple[str, ...]:
    """`data.classes` / `--classes`: "fer2013", "folders", or names ("pos,neg,neutral")."""
    if not isinstance(classes, str):
        names = tuple(str(c) for c in classes)
    elif classes.strip().lower() in ("fer2013", "folders"):
        return classes.strip().lower()
    else:
        names = tuple(c.strip() for c in classes.split(",") if c.strip())
    if names == EMOTIONS:
        return "fer2013"
    if len(names) < 2 or len({n.lower() for n in names}) != len(names):
        raise DataError(
            f"classes {classes!r}: give fer2013, folders, or at least two distinct names "
            "separated by commas"
        )
    return names


def source_kind(path: Path, votes: str | Path | None = None) -> str:
    """cache | ferplus | ferplus-csv | csv | arrays | folder, from what the path holds."""
    if votes is not None:
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: --votes joins fer2013new.csv with a fer2013.csv, not this source")
        return "ferplus-csv"
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "cache"
    if suffix == ".csv":
        return "csv"
    if path.is_dir():
        if find_votes_file(path):
            return "ferplus-csv"
        if any((path / f"x_{s}.npy").exists() for s in ARRAY_SPLITS):
            return "arrays"
    elif not (suffix == ".zip" or zipfile.is_zipfile(path)):
        raise DataError(
            f"{path}: not a FER2013 source (expected a .csv, a .zip or folder of images, "
            "a folder of x_*.npy arrays, FER+'s layout, or a ferlab .npz cache)"
        )
    names, _, close = archive_members(path)
    close()
    return "ferplus" if ferplus_folders(names) else "folder"


def load_dataset(
    source: str | Path,
    *,
    skip_bad: bool = False,
    split_name: str = TRAIN_SPLIT,
    progress: bool = False,
    classes: str | Sequence[str] = "fer2013",
    votes: str | Path | None = None,
    unlabeled: bool = False,
) -> tuple[FerData, LoadSummary]:
    """Read any supported source. `split_name` names the split of sources without one
    (a CSV with no Usage column, an image folder of bare emotion folders).

    `classes` says what an image folder's class folders mean: "fer2013" (the seven
    emotions in FER2013's id order, folder names matched through their aliases),
    "folders" (your own classes: one per folder name, in sorted order), or the class
    names in the order you want their ids. FER+ sources always have FER+'s classes.

    `votes`: a fer2013new.csv to join with the fer2013.csv `source`. FER+ faces without a
    majority emotion are left out unless `unlabeled` (the soft-label training modes).
    """
    path = Path(source)
    report = LoadSummary(str(path))
    classes = parse_classes(classes)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if votes is not None and not Path(votes).is_file():
        raise DataError(f"{votes}: no such file")
    kind = source_kind(path, votes)
    own = classes != "fer2013" and classes not in LABEL_SETS.values()
    if own and kind not in ("cache", "folder"):
        raise DataError(f"{path}: your own class names need an image folder or .zip "
                        f"(class folders holding images); this source has its own label set")
    if kind == "cache":
        data = load_cache(path)
        if own and tuple(data.class_names) != classes:
            raise DataError(f"{path}: cache classes ({', '.join(data.class_names)}) differ from "
                            f"the ones asked for ({', '.join(classes)})")
    elif kind == "ferplus":
        data = read_ferplus_layout(path, report, skip_bad, progress)
    elif kind == "ferplus-csv":
        pixels, vote_file = (path, Path(votes)) if votes is not None else find_votes_file(path)
        data = read_ferplus_csv(pixels, vote_file, report, skip_bad)
    elif kind == "csv":
        data = read_csv(path, report, skip_bad, split_name)
    elif kind == "arrays":
        data = read_arrays(path, report, skip_bad)
    else:
        data = read_image_folder(path, report, skip_bad, split_name, progress,
                                 "fer2013" if classes in LABEL_SETS.values() else classes)
    if not unlabeled:
        data = data.labeled()
    if len(data) == 0:
        raise DataError(f"{path}: no images found")
    return data, report
