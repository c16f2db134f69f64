"""FER2013 in every form users hold it, read into one in-memory dataset and one cache file.

Sources (see `load_dataset`):

* `fer2013.csv` with columns `emotion,pixels,Usage` (header spaces tolerated; no
  Usage column -> every row goes to one split named by the caller);
* the image-folder layout `train/<emotion>/...`, `test/<emotion>/...` as a
  directory or a .zip, split by file-name prefix (Training_/PublicTest_/PrivateTest_)
  where present, else by the top folder;
* the seed's arrays `x_train.npy`/`y_train.npy`, `x_val`, `x_test` in one folder;
* ferlab's own cache (`ferlab prepare ... -o fer.npz`).

Everything becomes a `FerData`: uint8 images (N, 48, 48), integer labels in
FER2013 order (`labels.EMOTIONS`), a split name and the original id per image.

Depends on: files, labels, preprocess (decoding and resizing); numpy.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .files import atomic_path
from .labels import EMOTIONS, NUM_CLASSES, emotion_id, known_folder_names
from .preprocess import IMAGE_SIZE, load_image, to_gray48

CACHE_FORMAT = 1
# Split names, in one place. FER2013's three, in their order:
TRAIN_SPLIT = "Training"
SPLIT_ORDER = (TRAIN_SPLIT, "PublicTest", "PrivateTest")
# What 'auto' means: validation selects models (PublicTest, else a generic name) ...
VAL_SPLITS = ("PublicTest", "test", "val", "valid", "validation")
# ... and evaluation reports the blind test first.
EVAL_SPLITS = ("PrivateTest", "PublicTest", "test", "val", "valid", "validation")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm"}
# The seed's array files and the FER2013 split each one holds.
ARRAY_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
PIXELS = IMAGE_SIZE * IMAGE_SIZE
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one image inside a zip, uncompressed


class DataError(ValueError):
    """Bad or missing input data. The message names the file, row or member and the reason."""


@dataclass(frozen=True)
class FerData:
    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, ids into class_names
    splits: np.ndarray  # (N,) str: Training / PublicTest / PrivateTest / other names
    ids: np.ndarray  # (N,) str: original file name, CSV line or array index
    class_names: tuple[str, ...] = EMOTIONS

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def split_names(self) -> list[str]:
        present = set(self.splits.tolist())
        known = [s for s in SPLIT_ORDER if s in present]
        return known + sorted(present - set(known))

    def subset(self, index: np.ndarray) -> FerData:
        return FerData(
            self.images[index], self.labels[index], self.splits[index], self.ids[index],
            self.class_names,
        )

    def split(self, name: str) -> FerData:
        if name not in self.split_names:
            raise DataError(
                f"split {name!r} is not in this data; splits present: "
                f"{', '.join(self.split_names) or 'none'}"
            )
        return self.subset(np.flatnonzero(self.splits == name))

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class for each split, in class-id order."""
        k = len(self.class_names)
        return {
            s: np.bincount(self.labels[self.splits == s], minlength=k).tolist()
            for s in self.split_names
        }


@dataclass
class LoadReport:
    """What ingest did besides reading: skipped bad items and converted images."""

    source: str
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the user
    converted: int = 0  # images resized to 48x48 and/or turned to grayscale
    ignored: int = 0  # non-image files passed over

    def bad(self, message: str, skip_bad: bool) -> None:
        if not skip_bad:
            raise DataError(message)
        self.skipped += 1
        if len(self.errors) < 5:
            self.errors.append(message)

    def lines(self) -> list[str]:
        out = []
        if self.converted:
            out.append(f"converted {self.converted} images to 48x48 grayscale")
        if self.ignored:
            out.append(f"ignored {self.ignored} non-image files")
        if self.skipped:
            out.append(f"skipped {self.skipped} bad items; first: " + " | ".join(self.errors))
        return out


def select_split(data: FerData, wanted: str, fallbacks: tuple[str, ...], purpose: str) -> str:
    """Resolve 'auto' to the first of `fallbacks` present; check an explicit name exists."""
    if wanted != "auto":
        if wanted not in data.split_names:
            data.split(wanted)  # raises, naming the splits present
        return wanted
    for name in fallbacks:
        if name in data.split_names:
            return name
    raise DataError(
        f"no {purpose} split: looked for {', '.join(fallbacks)}; splits present: "
        f"{', '.join(data.split_names) or 'none'}"
    )


# --------------------------------------------------------------------------- entry point


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


def load_dataset(
    source: str | Path,
    *,
    skip_bad: bool = False,
    split_name: str = TRAIN_SPLIT,
    progress: bool = False,
    classes: str | Sequence[str] = "fer2013",
) -> tuple[FerData, LoadReport]:
    """Read any supported source. `split_name` names the split of sources without one
    (a CSV with no Usage column, an image folder of bare emotion folders).

    `classes` says what an image folder's class folders mean: "fer2013" (the seven
    emotions in FER2013's id order, folder names matched through their aliases),
    "folders" (your own classes: one per folder name, in sorted order), or the class
    names in the order you want their ids.
    """
    path = Path(source)
    report = LoadReport(str(path))
    classes = parse_classes(classes)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    is_zip = path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))
    own = classes != "fer2013"
    if own and path.suffix.lower() != ".npz" and not (path.is_dir() or is_zip):
        raise DataError(f"{path}: your own class names need an image folder or .zip "
                        f"(class folders holding images); this source only has FER2013 ids")
    if path.is_dir():
        if not own and any((path / f"x_{s}.npy").exists() for s in ARRAY_SPLITS):
            data = _read_arrays(path, report, skip_bad)
        else:
            data = _read_image_folder(path, report, skip_bad, split_name, progress, classes)
    elif path.suffix.lower() == ".npz":
        data = load_cache(path)
        if isinstance(classes, tuple) and tuple(data.class_names) != classes:
            raise DataError(f"{path}: cache classes ({', '.join(data.class_names)}) differ from "
                            f"the ones asked for ({', '.join(classes)})")
    elif path.suffix.lower() == ".csv":
        data = _read_csv(path, report, skip_bad, split_name)
    elif is_zip:
        data = _read_image_folder(path, report, skip_bad, split_name, progress, classes)
    else:
        raise DataError(
            f"{path}: not a FER2013 source (expected a .csv, a .zip or folder of images, "
            "a folder of x_*.npy arrays, or a ferlab .npz cache)"
        )
    if len(data) == 0:
        raise DataError(f"{path}: no images found")
    return data, report


# --------------------------------------------------------------------------- cache


def save_cache(data: FerData, path: str | Path) -> None:
    """Write the compact cache atomically: a temp file in the same folder, then rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            format_version=np.array(CACHE_FORMAT),
            images=data.images,
            labels=data.labels.astype(np.int64),
            splits=data.splits.astype(str),
            ids=data.ids.astype(str),
            class_names=np.array(data.class_names),
        )


def load_cache(path: str | Path) -> FerData:
    path = Path(path)
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
            )
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read cache: {e}") from e
    if data.images.ndim != 3 or data.images.dtype != np.uint8:
        raise DataError(f"{path}: cache images must be uint8 (N, H, W), got {data.images.shape}")
    return data


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path, report: LoadReport, skip_bad: bool, split_name: str) -> FerData:
    images, labels, splits, ids = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file")
        columns = [h.strip().lower() for h in header]
        for needed in ("emotion", "pixels"):
            if needed not in columns:
                raise DataError(
                    f"{path}: header has no {needed!r} column (found: {', '.join(header)})"
                )
        i_emotion, i_pixels = columns.index("emotion"), columns.index("pixels")
        i_usage = columns.index("usage") if "usage" in columns else None
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(columns):
                report.bad(f"{where}: {len(row)} fields, header has {len(columns)}", skip_bad)
                continue
            label_text = row[i_emotion].strip()
            if not label_text.lstrip("-").isdigit() or not 0 <= int(label_text) < NUM_CLASSES:
                report.bad(
                    f"{where}: emotion {label_text!r} is not a label id 0-{NUM_CLASSES - 1}",
                    skip_bad,
                )
                continue
            try:
                pixels = np.array(row[i_pixels].split(), dtype=np.float64)
            except ValueError:
                report.bad(f"{where}: pixels are not all numbers", skip_bad)
                continue
            if pixels.size != PIXELS:
                report.bad(
                    f"{where}: {pixels.size} pixels, expected {PIXELS} (48x48)", skip_bad
                )
                continue
            if pixels.min() < 0 or pixels.max() > 255 or not np.all(pixels == np.round(pixels)):
                report.bad(f"{where}: pixels must be integers 0-255", skip_bad)
                continue
            images.append(pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
            labels.append(int(label_text))
            splits.append(row[i_usage].strip() if i_usage is not None else split_name)
            ids.append(f"line{reader.line_num}")
    return _assemble(images, labels, splits, ids)


# --------------------------------------------------------------------------- arrays


def _read_arrays(folder: Path, report: LoadReport, skip_bad: bool) -> FerData:
    parts = []
    for stem, split in ARRAY_SPLITS.items():
        x_path, y_path = folder / f"x_{stem}.npy", folder / f"y_{stem}.npy"
        if not x_path.exists():
            continue
        if not y_path.exists():
            raise DataError(f"{x_path}: found, but its labels {y_path.name} are missing")
        try:
            x = np.load(x_path, allow_pickle=False)
            y = np.load(y_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{x_path.parent}: cannot read x_{stem}/y_{stem}: {e}") from e
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{x_path}: shape {x.shape}, expected (N, 48, 48) or (N, 48, 48, 1)")
        if y.ndim == 2:
            if y.shape[1] != NUM_CLASSES:
                raise DataError(f"{y_path}: one-hot labels need {NUM_CLASSES} columns, got {y.shape}")
            y = y.argmax(axis=1)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{y_path}: {len(y)} labels for {len(x)} images in {x_path.name}")
        keep = np.ones(len(y), dtype=bool)
        for i in np.flatnonzero((y < 0) | (y >= NUM_CLASSES) | (y != np.round(y))):
            report.bad(f"{y_path}, row {i}: label {y[i]} is not a label id 0-6", skip_bad)
            keep[i] = False
        x = x.astype(np.float32) if x.dtype != np.uint8 else x
        if x.dtype != np.uint8:
            top = float(np.nanmax(x)) if x.size else 0.0
            if np.isnan(x).any() or x.min() < 0 or top > 255:
                raise DataError(f"{x_path}: pixel values must lie in 0-1 or 0-255")
            x = np.clip(np.rint(x * 255 if top <= 1.0 else x), 0, 255).astype(np.uint8)
        n = len(y)
        parts.append((x[keep], y[keep].astype(np.int64), [split] * int(keep.sum()),
                      [f"{stem}_{i}" for i in range(n) if keep[i]]))
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 48, 48), np.uint8)
    return FerData(
        images,
        np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64),
        np.array(sum((p[2] for p in parts), []), dtype=str),
        np.array(sum((p[3] for p in parts), []), dtype=str),
    )


# --------------------------------------------------------------------------- image folders


def _members(path: Path) -> tuple[list[str], Callable[[str], object], Callable[[], None]]:
    """Relative file names in a folder or zip, and how to open one."""
    if path.is_dir():
        names = sorted(
            p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
        )
        return names, lambda name: path / name, lambda: None
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: not a readable zip file ({e})") from e
    names = sorted(i.filename for i in archive.infolist() if not i.is_dir())

    def read(name: str) -> io.BytesIO:
        # Checked before inflating: a small member can claim gigabytes (a zip bomb). zipfile
        # stops at the declared size, so the check also bounds what is read.
        size = archive.getinfo(name).file_size
        if size > MAX_MEMBER_BYTES:
            raise DataError(f"member is {size / 1e6:,.0f} MB uncompressed, over the "
                            f"{MAX_MEMBER_BYTES / 1e6:.0f} MB limit for one image")
        return io.BytesIO(archive.read(name))

    return names, read, archive.close


def _strip_common_root(names: list[str]) -> dict[str, list[str]]:
    """Path parts of each member, without a wrapping folder every member shares."""
    parts = {n: n.split("/") for n in names}
    while parts:
        firsts = {p[0] for p in parts.values() if len(p) > 2}
        if len(firsts) != 1 or any(len(p) <= 2 for p in parts.values()):
            break
        (first,) = firsts
        if emotion_id(first) is not None or _split_of_folder(first) is not None:
            break
        parts = {n: p[1:] for n, p in parts.items()}
    return parts


def _split_of_folder(name: str) -> str | None:
    key = name.lower()
    if key in ("train", "training"):
        return TRAIN_SPLIT
    if key in ("test", "val", "valid", "validation", "publictest", "privatetest"):
        return {"publictest": "PublicTest", "privatetest": "PrivateTest"}.get(key, key)
    return None


def _split_of_file(filename: str) -> str | None:
    for prefix in SPLIT_ORDER:
        if filename.startswith(prefix + "_"):
            return prefix
    return None


def _iter_progress(items: list[str], progress: bool, desc: str) -> Iterator[str]:
    if not progress:
        yield from items
        return
    yield from tqdm(items, desc=desc, unit="img", leave=False)


def _class_lookup(
    classes: str | tuple[str, ...], folders: set[str]
) -> tuple[tuple[str, ...], Callable[[str], int | None], str]:
    """Class names, folder name -> class id, and the names to suggest for an unknown folder."""
    if classes == "fer2013":
        hint = f"known: {known_folder_names()}; for your own classes pass --classes folders"
        return EMOTIONS, emotion_id, hint
    names = tuple(sorted(folders)) if classes == "folders" else classes
    index = {n.lower(): i for i, n in enumerate(names)}
    return names, lambda folder: index.get(folder.lower()), f"classes: {', '.join(names)}"


def _read_image_folder(
    path: Path, report: LoadReport, skip_bad: bool, split_name: str, progress: bool,
    classes: str | tuple[str, ...] = "fer2013",
) -> FerData:
    names, opener, close = _members(path)
    try:
        parts = _strip_common_root(
            [n for n in names if not any(c.startswith((".", "__MACOSX")) for c in n.split("/"))]
        )
        label_folders = {p[-2] for p in parts.values()
                         if len(p) >= 2 and Path(p[-1]).suffix.lower() in IMAGE_EXTENSIONS}
        class_names, lookup, hint = _class_lookup(classes, label_folders)
        images, labels, splits, ids = [], [], [], []
        for name in _iter_progress(list(parts), progress, f"reading {path.name}"):
            p = parts[name]
            where = f"{path}: {name}"
            if Path(p[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                report.ignored += 1
                continue
            if len(p) < 2:
                report.bad(f"{where}: image outside any class folder", skip_bad)
                continue
            label = lookup(p[-2])
            if label is None:
                report.bad(f"{where}: unknown class folder {p[-2]!r} ({hint})", skip_bad)
                continue
            split = _split_of_file(p[-1])
            if split is None:
                split = (_split_of_folder(p[-3]) or p[-3]) if len(p) >= 3 else split_name
            try:
                im = load_image(opener(name))
            except Exception as e:  # PIL raises many types for broken files
                report.bad(f"{where}: unreadable or truncated image ({e})", skip_bad)
                continue
            if im.mode != "L" or im.size != (IMAGE_SIZE, IMAGE_SIZE):
                report.converted += 1
            images.append(to_gray48(im))
            labels.append(label)
            splits.append(split)
            ids.append(Path(p[-1]).stem)
    finally:
        close()
    return _assemble(images, labels, splits, ids, class_names)


def _assemble(images: list, labels: list, splits: list, ids: list,
              class_names: tuple[str, ...] = EMOTIONS) -> FerData:
    return FerData(
        np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        np.array(labels, dtype=np.int64),
        np.array(splits, dtype=str),
        np.array(ids, dtype=str),
        class_names,
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
    """Images per split and class, as a table."""
    names = data.class_names
    head = f"{'split':<14}" + "".join(f"{n[:9]:>10}" for n in names) + f"{'total':>10}"
    rows = [head, "-" * len(head)]
    for split, counts in data.class_counts().items():
        rows.append(f"{split:<14}" + "".join(f"{c:>10,}" for c in counts) + f"{sum(counts):>10,}")
    return "\n".join(rows)
