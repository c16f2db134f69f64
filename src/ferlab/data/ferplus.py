"""FER+ readers: the official folder layout, and fer2013.csv joined with fer2013new.csv.

* The layout FERPlus's `generate_training_data.py` writes, as a folder or .zip:
  `FER2013Train/`, `FER2013Valid/`, `FER2013Test/` (any subset), each holding
  `fer<7 digits>.png` images and a `label.csv` whose lines are
  `name,"(left, top, right, bottom)",<10 vote counts>` with no header.
* `fer2013.csv` plus `fer2013new.csv` (`Usage,Image name,<10 vote columns>`), joined
  by row order - never by image name, which FER+ leaves empty for faces it dropped
  and which drifts between copies. Rows without a name are dropped and counted.

Both give a `FerData` with FER+'s 8 class names, its split names (FER2013Train,
FER2013Valid, FER2013Test), every image's raw votes, and its official majority label
(or UNKNOWN / NOT_A_FACE, kept in the data for the soft-label training modes).

Depends on: labels, preprocess, this package's core, votes and fer2013 (CSV pixels,
archive members); numpy.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..core.labels import FERPLUS_EMOTIONS, FERPLUS_VOTE_COLUMNS
from .core import FERPLUS_SPLITS, DataError, FerData, LoadSummary, assemble
from .fer2013 import IMAGE_EXTENSIONS, archive_members, iter_progress, read_csv
from .preprocess import ImageError, load_image, to_gray48
from .votes import majority_labels

SPLIT_FOLDERS = {name.lower(): name for name in FERPLUS_SPLITS.values()}
_BOX = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)$")


def ferplus_folders(names: list[str]) -> dict[str, str]:
    """Member prefix ('FER2013Train/', 'data/FER2013Valid/') -> split name, for every split
    folder holding a label.csv; empty when this is not the FER+ layout."""
    out = {}
    for name in names:
        parts = name.split("/")
        if len(parts) >= 2 and parts[-1] == "label.csv" and parts[-2].lower() in SPLIT_FOLDERS:
            out["/".join(parts[:-1]) + "/"] = SPLIT_FOLDERS[parts[-2].lower()]
    return out


def parse_votes(fields: list[str], where: str) -> list[int]:
    """Ten vote counts, each a whole number >= 0; DataError naming the field otherwise."""
    if len(fields) != len(FERPLUS_VOTE_COLUMNS):
        raise DataError(f"{where}: {len(fields)} vote counts, expected {len(FERPLUS_VOTE_COLUMNS)} "
                        f"({', '.join(FERPLUS_VOTE_COLUMNS)})")
    votes = []
    for column, text in zip(FERPLUS_VOTE_COLUMNS, fields):
        text = text.strip()
        if not (text.isascii() and text.isdigit()):
            raise DataError(f"{where}: {column} vote count {text!r} is not a whole number >= 0")
        votes.append(int(text))
    return votes


def _parse_label_line(row: list[str], where: str) -> tuple[str, tuple[int, int, int, int], list[int]]:
    if len(row) < 2:
        raise DataError(f"{where}: expected name, face box and 10 vote counts, got {len(row)} fields")
    box = _BOX.match(row[1].strip())
    if not box:
        raise DataError(f"{where}: face box {row[1]!r} is not '(left, top, right, bottom)'")
    left, top, right, bottom = (int(g) for g in box.groups())
    if right <= left or bottom <= top:
        raise DataError(f"{where}: face box {row[1]!r} is empty")
    return row[0].strip(), (left, top, right, bottom), parse_votes(row[2:], where)


def _face(image_file, box: tuple[int, int, int, int], where: str) -> np.ndarray:
    im = load_image(image_file)
    if box != (0, 0, *im.size):
        if box[2] > im.size[0] or box[3] > im.size[1]:
            raise DataError(f"{where}: face box {box} lies outside the {im.size[0]}x{im.size[1]} image")
        im = im.crop(box)
    return to_gray48(im)


def read_ferplus_layout(path: Path, report: LoadSummary, skip_bad: bool, progress: bool) -> FerData:
    names, opener, close = archive_members(path)
    try:
        folders = ferplus_folders(names)
        present = set(names)
        images, splits, ids, votes = [], [], [], []
        for prefix, split in sorted(folders.items(), key=lambda kv: kv[1]):
            label_file = f"{path}: {prefix}label.csv"
            raw = opener(prefix + "label.csv")
            text = (raw.read() if isinstance(raw, io.BytesIO) else Path(raw).read_bytes()).decode("utf-8-sig")
            mentioned = set()  # names on any line, good or bad: "without a line" means none
            lines = list(csv.reader(io.StringIO(text)))
            for line_no, row in enumerate(iter_progress(lines, progress, f"reading {split}"), 1):
                if not row or all(not c.strip() for c in row):
                    continue
                where = f"{label_file}, line {line_no}"
                mentioned.add(row[0].strip())
                try:
                    name, box, v = _parse_label_line(row, where)
                    if prefix + name not in present:
                        raise DataError(f"{where}: no image {name!r} in {prefix.rstrip('/')}")
                    face = _face(opener(prefix + name), box, f"{path}: {prefix}{name}")
                except DataError as e:
                    report.bad(str(e), skip_bad)
                    continue
                except ImageError as e:
                    report.bad(f"{path}: {prefix}{name}: {e}", skip_bad)
                    continue
                images.append(face)
                splits.append(split)
                ids.append(Path(name).stem)
                votes.append(v)
            for member in sorted(names):
                rest = member[len(prefix):]
                if member.startswith(prefix) and "/" not in rest and rest not in mentioned \
                        and Path(rest).suffix.lower() in IMAGE_EXTENSIONS:
                    report.bad(f"{path}: {member}: image without a line in {prefix}label.csv", skip_bad)
    finally:
        close()
    return _with_majority(images, splits, ids, votes)


def _with_majority(images: list, splits: list, ids: list, votes: list) -> FerData:
    data = assemble(images, [0] * len(images), splits, ids, FERPLUS_EMOTIONS, votes)
    return FerData(data.images, majority_labels(data.votes) if len(data) else data.labels,
                   data.splits, data.ids, data.class_names, data.votes)


def _vote_header(header: list[str], path: Path) -> tuple[int, int, list[int]]:
    """Column indices of Usage, Image name and the ten vote columns in fer2013new.csv."""
    columns = [h.strip().lower() for h in header]
    missing = [c for c in ("usage", "image name", *(v.lower() for v in FERPLUS_VOTE_COLUMNS))
               if c not in columns]
    if missing:
        raise DataError(f"{path}: header lacks {', '.join(missing)} (expected Usage, Image name, "
                        f"{', '.join(FERPLUS_VOTE_COLUMNS)}; found: {', '.join(header)})")
    return (columns.index("usage"), columns.index("image name"),
            [columns.index(v.lower()) for v in FERPLUS_VOTE_COLUMNS])


def read_ferplus_csv(pixels_csv: Path, votes_csv: Path, report: LoadSummary, skip_bad: bool) -> FerData:
    """fer2013.csv's pixels and Usage joined row by row with fer2013new.csv's votes."""
    faces = read_csv(pixels_csv, report, skip_bad, "Training")
    by_line = {str(i): k for k, i in enumerate(faces.ids)}  # "line<N>" of fer2013.csv -> index
    images, splits, ids, votes = [], [], [], []
    unnamed, names = 0, Counter()
    with open(votes_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{votes_csv}: empty file")
        i_usage, i_name, i_votes = _vote_header(header, votes_csv)
        rows = 0
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            rows += 1
            where = f"{votes_csv}, line {reader.line_num}"
            k = by_line.get(f"line{reader.line_num}")
            try:
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} fields, header has {len(header)}")
                if not row[i_name].strip():
                    unnamed += 1  # FER+ dropped this face: no name, no usable votes
                    continue
                v = parse_votes([row[i] for i in i_votes], where)
                if k is None:
                    raise DataError(f"{where}: fer2013.csv has no usable row {reader.line_num} to join "
                                    "(rows are joined by their order)")
                if row[i_usage].strip() != str(faces.splits[k]):
                    raise DataError(f"{where}: Usage {row[i_usage].strip()!r} differs from fer2013.csv's "
                                    f"{str(faces.splits[k])!r} on the same row: the files are out of step")
            except DataError as e:
                report.bad(str(e), skip_bad)
                continue
            names[row[i_name].strip()] += 1
            images.append(faces.images[k])
            splits.append(FERPLUS_SPLITS.get(str(faces.splits[k]), str(faces.splits[k])))
            ids.append(Path(row[i_name].strip()).stem)
            votes.append(v)
    lines = len(faces) + report.skipped
    if rows != lines and not skip_bad:
        raise DataError(f"{votes_csv}: {rows} rows, but {pixels_csv.name} has {lines}: the two are "
                        "joined by row order, so both must be complete files")
    report.notes.append(f"joined {pixels_csv.name} and {votes_csv.name} by row order; dropped "
                        f"{unnamed} rows that FER+ leaves unnamed")
    twice = sum(c - 1 for c in names.values() if c > 1)
    if twice:
        report.notes.append(f"{twice} rows repeat an image name of an earlier row "
                            "(kept: each row is its own face)")
    return _with_majority(images, splits, ids, votes)


def find_votes_file(folder: Path) -> tuple[Path, Path] | None:
    """(fer2013.csv, fer2013new.csv) when a folder holds both; else None."""
    pixels, votes = folder / "fer2013.csv", folder / "fer2013new.csv"
    return (pixels, votes) if pixels.is_file() and votes.is_file() else None
