"""Ingest of every FER2013 form, the cache, and every rejected bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_faces
from PIL import Image

from ferlab.data import (
    DataError,
    load_cache,
    load_dataset,
    save_cache,
    select_split,
    stratified_subset,
)


def write_csv(path: Path, rows: list[tuple], header: str = "emotion,pixels,Usage") -> Path:
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_rows(n: int = 14, usage=("Training", "PublicTest")):
    x, y = make_faces(n)
    return [(int(y[i]), " ".join(map(str, x[i].ravel())), usage[i % len(usage)]) for i in range(n)], x, y


def png_bytes(array: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------- CSV


def test_csv_reads_pixels_labels_and_usage(tmp_path):
    rows, x, y = csv_rows()
    data, report = load_dataset(write_csv(tmp_path / "fer.csv", rows))
    assert len(data) == 14 and report.skipped == 0
    assert np.array_equal(data.images, x) and np.array_equal(data.labels, y)
    assert data.split_names == ["Training", "PublicTest"]
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (48, 48)


def test_csv_header_with_leading_spaces(tmp_path):
    rows, _, _ = csv_rows()
    data, _ = load_dataset(write_csv(tmp_path / "fer.csv", rows, "emotion, pixels, Usage"))
    assert data.split_names == ["Training", "PublicTest"]


def test_csv_without_usage_is_one_named_split(tmp_path):
    rows, _, y = csv_rows()
    path = write_csv(tmp_path / "fer.csv", [r[:2] for r in rows], "emotion,pixels")
    data, _ = load_dataset(path, split_name="MySet")
    assert data.split_names == ["MySet"] and np.array_equal(data.labels, y)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: (r[0], " ".join(r[1].split()[:-1]), r[2]), "2303 pixels, expected 2304"),
        (lambda r: (r[0], r[1].replace(" ", " x ", 1), r[2]), "not all numbers"),
        (lambda r: (9, r[1], r[2]), "emotion '9' is not a label id"),
        (lambda r: ("happy", r[1], r[2]), "emotion 'happy' is not a label id"),
        (lambda r: (r[0], r[1] + " 300", r[2]), "2305 pixels"),
    ],
)
def test_csv_bad_rows_name_file_line_and_reason(tmp_path, mutate, reason):
    rows, _, _ = csv_rows()
    rows[3] = mutate(rows[3])
    path = write_csv(tmp_path / "fer.csv", rows)
    with pytest.raises(DataError) as e:
        load_dataset(path)
    assert str(path) in str(e.value) and "line 5" in str(e.value) and reason in str(e.value)


def test_csv_pixel_values_out_of_range(tmp_path):
    rows, _, _ = csv_rows()
    rows[0] = (rows[0][0], " ".join(["256"] * 2304), rows[0][2])
    with pytest.raises(DataError, match="line 2: pixels must be integers 0-255"):
        load_dataset(write_csv(tmp_path / "fer.csv", rows))


def test_skip_bad_skips_and_reports(tmp_path):
    rows, _, _ = csv_rows()
    rows[1] = (8, rows[1][1], rows[1][2])
    rows[2] = (rows[2][0], "1 2 3", rows[2][2])
    data, report = load_dataset(write_csv(tmp_path / "fer.csv", rows), skip_bad=True)
    assert len(data) == 12 and report.skipped == 2
    assert "line 3" in report.errors[0] and "line 4" in report.errors[1]
    assert any("skipped 2 bad items" in line for line in report.lines())


def test_empty_sources_are_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        load_dataset(tmp_path / "empty.csv")
    write_csv(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match="header.csv: no images found"):
        load_dataset(tmp_path / "header.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "folder")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- image folders


def build_folder(root: Path, n: int = 14, prefixed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_faces(n)
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i in range(n):
        split_dir, prefix = ("train", "Training") if i % 2 == 0 else ("test", "PublicTest")
        folder = root / split_dir / names[y[i]]
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{prefix}_{i}" if prefixed else f"img{i}"
        Image.fromarray(x[i]).save(folder / f"{stem}.png")
    return x, y


def test_image_folder_splits_by_prefix(tmp_path):
    x, y = build_folder(tmp_path / "fer")
    data, _ = load_dataset(tmp_path / "fer")
    assert data.split_names == ["Training", "PublicTest"]
    order = np.argsort([int(i.split("_")[1]) for i in data.ids])
    assert np.array_equal(data.images[order], x) and np.array_equal(data.labels[order], y)


def test_image_folder_without_prefixes_uses_folders(tmp_path):
    build_folder(tmp_path / "fer", prefixed=False)
    data, _ = load_dataset(tmp_path / "fer")
    assert data.split_names == ["Training", "test"]


def test_zip_with_wrapping_folder_aliases_and_conversion(tmp_path):
    x, y = make_faces(7)
    aliases = ["Anger", "disgusted", "fearful", "Happy", "sadness", "surprised", "neutral"]
    path = tmp_path / "faces.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(7):
            big = np.asarray(Image.fromarray(x[i]).resize((96, 96)))
            z.writestr(f"release/train/{aliases[y[i]]}/Training_{i}.jpg", png_bytes(big, "RGB", "JPEG"))
        z.writestr("release/README.txt", "not an image")
        z.writestr("__MACOSX/release/._junk", "junk")
    data, report = load_dataset(path)
    assert len(data) == 7 and data.split_names == ["Training"]
    assert sorted(data.labels.tolist()) == sorted(y.tolist())
    assert report.converted == 7 and report.ignored == 1
    assert data.images.shape == (7, 48, 48)


def test_unknown_emotion_folder_is_refused(tmp_path):
    build_folder(tmp_path / "fer")
    (tmp_path / "fer" / "train" / "contempt").mkdir()
    Image.new("L", (48, 48)).save(tmp_path / "fer" / "train" / "contempt" / "Training_99.png")
    with pytest.raises(DataError, match=r"train/contempt/Training_99.png: unknown class folder 'contempt'"):
        load_dataset(tmp_path / "fer")


def test_unreadable_and_truncated_images(tmp_path):
    build_folder(tmp_path / "fer")
    happy = tmp_path / "fer" / "train" / "happy"
    (happy / "Training_100.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="Training_100.png: unreadable or truncated image"):
        load_dataset(tmp_path / "fer")
    (happy / "Training_100.png").unlink()
    whole = png_bytes(np.zeros((48, 48), np.uint8) + 7, fmt="JPEG")
    (happy / "Training_101.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="Training_101.jpg: unreadable or truncated image"):
        load_dataset(tmp_path / "fer")
    data, report = load_dataset(tmp_path / "fer", skip_bad=True)
    assert report.skipped == 1 and len(data) == 14


def test_not_a_zip(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 nope")
    with pytest.raises(DataError, match="broken.zip"):
        load_dataset(bad)


# --------------------------------------------------------------------------- arrays


def test_seed_arrays_one_hot_float_and_channel_axis(tmp_path):
    x, y = make_faces(21)
    for stem, part in (("train", slice(0, 7)), ("val", slice(7, 14)), ("test", slice(14, 21))):
        np.save(tmp_path / f"x_{stem}.npy", (x[part] / 255.0).astype(np.float32)[..., None])
        np.save(tmp_path / f"y_{stem}.npy", np.eye(7, dtype=np.float32)[y[part]])
    data, _ = load_dataset(tmp_path)
    assert data.split_names == ["Training", "PublicTest", "PrivateTest"]
    assert np.array_equal(data.labels, y)
    assert np.abs(data.images.astype(int) - x.astype(int)).max() <= 1


def test_arrays_integer_labels_and_bad_shape(tmp_path):
    x, y = make_faces(7)
    np.save(tmp_path / "x_train.npy", x)
    np.save(tmp_path / "y_train.npy", y)
    data, _ = load_dataset(tmp_path)
    assert np.array_equal(data.images, x)
    np.save(tmp_path / "x_train.npy", x[:, :40])
    with pytest.raises(DataError, match=r"x_train.npy: shape \(7, 40, 48\)"):
        load_dataset(tmp_path)
    np.save(tmp_path / "x_train.npy", x)
    np.save(tmp_path / "y_train.npy", y + 3)
    with pytest.raises(DataError, match="y_train.npy, row .*: label .* is not a label id"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- cache and splits


def test_cache_round_trip_and_atomic_write(tmp_path, synthetic_data):
    path = tmp_path / "c.npz"
    save_cache(synthetic_data, path)
    back = load_cache(path)
    assert np.array_equal(back.images, synthetic_data.images)
    assert back.class_names == synthetic_data.class_names
    assert list(tmp_path.iterdir()) == [path]  # no temp file left beside it
    data, _ = load_dataset(path)
    assert data.split_names == ["Training", "PublicTest"]


def test_not_a_cache(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="not a ferlab cache"):
        load_dataset(tmp_path / "other.npz")


def test_missing_split_names_the_splits_present(synthetic_data):
    message = "'PrivateTest' is not in this data; splits present: Training, PublicTest"
    with pytest.raises(DataError, match=message):
        synthetic_data.split("PrivateTest")
    assert select_split(synthetic_data, "auto", ("PrivateTest", "PublicTest"), "x") == "PublicTest"


def test_stratified_subset_keeps_class_shares(synthetic_data):
    labels = np.repeat(np.arange(7), [40, 4, 40, 70, 48, 30, 48])
    a = stratified_subset(labels, 100, seed=1)
    b = stratified_subset(labels, 100, seed=1)
    c = stratified_subset(labels, 100, seed=2)
    assert len(a) == 100 and np.array_equal(a, b) and not np.array_equal(a, c)
    counts = np.bincount(labels[a], minlength=7)
    assert abs(counts[3] - 25) <= 1 and counts[1] >= 1
