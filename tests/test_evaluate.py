from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_MODEL

from ferlab.core.config import load_config
from ferlab.core.labels import EMOTIONS
from ferlab.evaluation.scores import classification_metrics, evaluate, format_report, write_report
from ferlab.inference.checkpoint import CheckpointError, load_checkpoint
from ferlab.inference.tta import tta_views
from ferlab.photos.recognizer import EmotionRecognizer
from ferlab.training import train


def test_metrics_on_a_hand_checked_example():
    y_true = np.array([0, 0, 1, 3, 3, 3])
    y_pred = np.array([0, 3, 1, 3, 3, 0])
    m = classification_metrics(y_true, y_pred, EMOTIONS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["angry"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["happy"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["fear"]["support"] == 0
    assert m["confusion_matrix"][0][3] == 1 and m["confusion_matrix"][3][0] == 1
    # macro average over all seven classes, absent ones counting zero
    assert m["macro_f1"] == pytest.approx((0.5 + 1 + 2 / 3) / 7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_data

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [*TINY_MODEL, "train.epochs=3"])
    train(cfg, run, data=make_data(), log=lambda _: None)
    return run


def test_evaluate_report_and_files(trained, tmp_path):
    from conftest import make_data

    loaded = load_checkpoint(trained)
    result = evaluate(loaded, make_data(), "auto")
    assert result["split"] == "PublicTest" and result["n"] == 140
    assert result["accuracy"] > 0.6
    assert sum(map(sum, result["confusion_matrix"])) == 140
    assert set(result["per_class"]) == set(EMOTIONS)
    text = format_report(result)
    assert "macro avg" in text and "weighted avg" in text and "surprise" in text
    json_path, png = write_report(result, tmp_path)
    assert json_path.name == "eval_PublicTest.json" and png.stat().st_size > 10_000


def test_predict_crops_any_size_and_colour(trained):
    from conftest import make_faces
    from PIL import Image

    x, y = make_faces(14, seed=5)
    big_rgb = [Image.fromarray(im).resize((120, 120)).convert("RGB") for im in x]
    preds = EmotionRecognizer(trained, detect=False).classify_crops(big_rgb)
    assert len(preds) == 14
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds)
    hits = sum(p["emotion"] == EMOTIONS[label] for p, label in zip(preds, y))
    assert hits >= 9


def test_tta_views():
    import torch

    x = torch.randn(2, 1, 48, 48)
    assert len(tta_views(x, "flip")) == 2 and torch.equal(tta_views(x, "flip")[1], x.flip(-1))
    views = tta_views(x, "tencrop")
    assert len(views) == 10 and all(v.shape == x.shape for v in views)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="holds no best.pt"):
        load_checkpoint(tmp_path)
