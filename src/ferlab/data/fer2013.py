"""FER2013 readers: `fer2013.csv`, the image-folder layout (folder or .zip), the seed's arrays.

* `fer2013.csv` with columns `emotion,pixels,Usage` (header spaces tolerated; no
  Usage column -> every row goes to one split named by the caller);
* the image-folder layout `train/<emotion>/...`, `test/<emotion>/...` as a
  directory or a .zip, split by file-name prefix (Training_/PublicTest_/PrivateTest_)
  where present, else by the top folder; also your own class folders;
* the seed's arrays `x_train.npy`/`y_train.npy`, `x_val`, `x_test` in one folder.

Depends on: labels, preprocess (decoding and resizing), this package's core; numpy.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.labels import EMOTIONS, NUM_CLASSES, emotion_id, known_folder_names
from .core import SPLIT_ORDER, TRAIN_SPLIT, DataError, FerData, LoadSummary, assemble
from .preprocess import IMAGE_SIZE, ImageError, load_image, to_gray48

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm"}
# The seed's array files and the FER2013 split each one holds.
ARRAY_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
PIXELS = IMAGE_SIZE * IMAGE_SIZE
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one image inside a zip, uncompressed


# --------------------------------------------------------------------------- CSV


def read_csv(path: Path, report: LoadSummary, skip_bad: bool, split_name: str) -> FerData:
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
            if not (label_text.isascii() and label_text.lstrip("-").isdigit()) \
                    or not 0 <= int(label_text) < NUM_CLASSES:
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
    return assemble(images, labels, splits, ids)


# --------------------------------------------------------------------------- arrays


def read_arrays(folder: Path, report: LoadSummary, skip_bad: bool) -> FerData:
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


def archive_members(path: Path) -> tuple[list[str], Callable[[str], object], Callable[[], None]]:
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
        # Checked before inflating: a small member can claim gigabytes (a zip bomb). And
        # inflated a megabyte at a time, never more than declared: zipfile's read() of a
        # whole member inflates each compressed block at once, so a header that lies
        # about the size (1 KB declared, 2 GB inside) cost gigabytes before its CRC failed.
        size = archive.getinfo(name).file_size
        if size > MAX_MEMBER_BYTES:
            raise DataError(f"member is {size / 1e6:,.0f} MB uncompressed, over the "
                            f"{MAX_MEMBER_BYTES / 1e6:.0f} MB limit for one image")
        out = io.BytesIO()
        try:
            with archive.open(name) as member:
                while chunk := member.read(1 << 20):
                    out.write(chunk)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(f"member is damaged or not what its header says ({e})") from e
        out.seek(0)
        return out

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


def iter_progress(items: list[str], progress: bool, desc: str) -> Iterator[str]:
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


def read_image_folder(
    path: Path, report: LoadSummary, skip_bad: bool, split_name: str, progress: bool,
    classes: str | tuple[str, ...] = "fer2013",
) -> FerData:
    names, opener, close = archive_members(path)
    try:
        parts = _strip_common_root(
            [n for n in names if not any(c.startswith((".", "__MACOSX")) for c in n.split("/"))]
        )
        label_folders = {p[-2] for p in parts.values()
                         if len(p) >= 2 and Path(p[-1]).suffix.lower() in IMAGE_EXTENSIONS}
        class_names, lookup, hint = _class_lookup(classes, label_folders)
        images, labels, splits, ids = [], [], [], []
        for name in iter_progress(list(parts), progress, f"reading {path.name}"):
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
            except (ImageError, DataError) as e:  # undecodable, or a member over the size limit
                report.bad(f"{where}: {e}", skip_bad)
                continue
            if im.mode != "L" or im.size != (IMAGE_SIZE, IMAGE_SIZE):
                report.converted += 1
            images.append(to_gray48(im))
            labels.append(label)
            splits.append(split)
            ids.append(Path(p[-1]).stem)
    finally:
        close()
    return assemble(images, labels, splits, ids, class_names)


