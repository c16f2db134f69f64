"""On the real FER2013 data (../shared/data): ingest counts and a short training run."""

from __future__ import annotations

import pytest
from conftest import real_zip_or_skip

from ferlab.core.config import load_config
from ferlab.data import load_dataset
from ferlab.evaluation.scores import evaluate
from ferlab.inference.checkpoint import load_checkpoint
from ferlab.training import train

TRAINING = [3995, 436, 4097, 7215, 4830, 3171, 4965]
PUBLIC = [467, 56, 496, 895, 653, 415, 607]


@pytest.fixture(scope="module")
def real():
    data, report = load_dataset(real_zip_or_skip())
    return data


def test_real_zip_counts(real):
    counts = real.class_counts()
    assert counts == {"Training": TRAINING, "PublicTest": PUBLIC}


@pytest.mark.slow
def test_short_training_beats_majority_class(real, tmp_path):
    """A small net on 6,000 training images for 3 epochs: well above the 25% majority rate."""
    cfg = load_config("vgg-fast", ["model.widths=[16,32,64,128]", "train.epochs=3",
                                   "data.limit=6000", "train.tta=none"])
    history = train(cfg, tmp_path / "run", data=real, log=lambda _: None)
    result = evaluate(load_checkpoint(tmp_path / "run"), real, "PublicTest")
    assert result["accuracy"] == max(h["val_accuracy"] for h in history)
    assert result["accuracy"] > 0.35, result["accuracy"]
