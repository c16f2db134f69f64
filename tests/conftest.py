"""Shared fixtures: small synthetic FER-like data made in code (no dataset images in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferlab.core.labels import EMOTIONS
from ferlab.data import FerData, save_cache

REAL_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fer2013-dev.zip"


def make_faces(n: int, seed: int = 0, noise: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic 48x48 'faces': each class brightens its own 12x12 patch."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(EMOTIONS)
    rng.shuffle(labels)
    images = rng.normal(100, noise, size=(n, 48, 48))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 3)
        images[i, 4 + r * 14 : 16 + r * 14, 4 + c * 14 : 16 + c * 14] += 110
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def make_data(n_train: int = 280, n_val: int = 140, seed: int = 0) -> FerData:
    x, y = make_faces(n_train + n_val, seed)
    splits = np.array(["Training"] * n_train + ["PublicTest"] * n_val)
    ids = np.array([f"{s}_{i}" for i, s in enumerate(splits)])
    return FerData(x, y, splits, ids)


@pytest.fixture
def synthetic_data() -> FerData:
    return make_data()


@pytest.fixture
def synthetic_cache(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.npz"
    save_cache(make_data(), path)
    return path


# A small, fast model config for training tests (seed CNN, 2 blocks).
TINY_MODEL = [
    "model.block_num=2", "model.layer_num=1", "model.filters_in_each_block=[8,16]",
    "train.batch_size=32", "train.precision=fp32",
]


def real_zip_or_skip() -> Path:
    if not REAL_ZIP.exists():
        pytest.skip(f"real FER2013 data not found at {REAL_ZIP} (shared/data is absent here)")
    return REAL_ZIP


def child_pids(pid: int) -> list[int]:
    """The PIDs of `pid`'s children (Linux /proc; empty elsewhere)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
