"""Temperature scaling: the fit, the figures, storage in checkpoints and ONNX, and the CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.labels import EMOTIONS as FER2013_EMOTIONS
from ferlab.data import FerData, save_cache
from ferlab.data.preprocess import Preprocessing
from ferlab.inference.checkpoint import checkpoint_dict, read_checkpoint, save_checkpoint
from ferlab.inference.classifier import load_classifier
from ferlab.inference.temperature import (
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    stored_temperature,
)
from ferlab.models import build_model


def overconfident(n=4000, classes=7, true_t=2.5, seed=0):
    """Labels drawn from softmax(z), scores reported as softmax(z * true_t): too sharp."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    sharp = np.exp(z * true_t) / np.exp(z * true_t).sum(1, keepdims=True)
    return sharp, labels


def test_fit_recovers_the_temperature_and_lowers_ece_and_nll():
    probs, labels = overconfident()
    t = fit_temperature(probs, labels)
    assert 2.1 < t < 2.9
    before = calibration_metrics(probs, labels)
    after = calibration_metrics(apply_temperature(probs, t), labels)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]
    assert after["brier"] < before["brier"]
    # the predicted class never changes
    assert (apply_temperature(probs, t).argmax(1) == probs.argmax(1)).all()


def test_metrics_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 1])
    m = calibration_metrics(probs, labels, bins=2)
    # bin (0.5, 1]: all three faces, confidence (0.9+0.6+0.8)/3, accuracy 2/3
    assert m["ece"] == pytest.approx(abs((0.9 + 0.6 + 0.8) / 3 - 2 / 3))
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8])))
    assert m["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.08]))
    assert sum(b["n"] for b in m["bins"]) == 3


def test_stored_temperature_rejects_nonsense():
    assert stored_temperature({}) == 1.0
    for bad in (0, -1.0, float("nan"), "hot"):
        with pytest.raises(ValueError, match="temperature"):
            stored_temperature({"calibration": {"temperature": bad}})


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    model = build_model("seed_cnn", num_classes=7, block_num=1, layer_num=1, filters_in_each_block=[4])
    with torch.no_grad():  # a sharp, confident net so the fitted T differs from 1
        for p in model.parameters():
            p.mul_(8)
    ckpt = checkpoint_dict(model, model_name="seed_cnn",
                           model_args=dict(num_classes=7, block_num=1, layer_num=1,
                                           filters_in_each_block=[4]),
                           class_names=FER2013_EMOTIONS, preprocessing=Preprocessing(), epoch=1, metrics={})
    path = tmp_path / "m.pt"
    save_checkpoint(ckpt, path)
    rng = np.random.default_rng(0)
    n = 140
    data = FerData(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), np.arange(n) % 7,
                   np.array(["PublicTest"] * n), np.arange(n).astype(str), FER2013_EMOTIONS)
    cache = tmp_path / "d.npz"
    save_cache(data, cache)
    return path, cache


def test_cli_calibrate_stores_it_and_everything_applies_it(tiny, tmp_path):
    path, cache = tiny
    raw = load_classifier(path, device="cpu", precision="fp32")
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    before = raw.predict_proba(faces)
    out = CliRunner().invoke(app, ["calibrate", str(path), "--data", str(cache)])
    assert out.exit_code == 0, out.output
    assert "temperature" in out.output and "fitted on PublicTest" in out.output
    entry = read_checkpoint(path)["calibration"]
    assert entry["temperature"] > 1 and entry["after"]["nll"] <= entry["before"]["nll"]
    cal = load_classifier(path, device="cpu", precision="fp32")
    assert cal.temperature == entry["temperature"]
    expected = apply_temperature(before, cal.temperature)
    np.testing.assert_allclose(cal.predict_proba(faces), expected, atol=1e-5)
    np.testing.assert_allclose(cal.predict_proba(faces, calibrated=False), before, atol=1e-6)
    uncal = load_classifier(path, device="cpu", precision="fp32", calibrated=False)
    assert uncal.temperature == 1.0
    # evaluate: raw and calibrated figures, reliability diagram
    ev = CliRunner().invoke(app, ["evaluate", str(path), "--data", str(cache), "--split", "PublicTest",
                                  "--json", "--out", str(tmp_path)])
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.output.strip().splitlines()[-1])["calibration"]
    assert report["calibrated"]["nll"] <= report["raw"]["nll"] + 1e-9
    assert (tmp_path / "reliability_PublicTest.png").stat().st_size > 0
    # ONNX export carries the temperature
    onnx_path = tmp_path / "m.onnx"
    assert CliRunner().invoke(app, ["export", str(path), "-o", str(onnx_path)]).exit_code == 0
    onnx_cls = load_classifier(onnx_path)
    assert onnx_cls.temperature == pytest.approx(entry["temperature"])
    np.testing.assert_allclose(onnx_cls.predict_proba(faces), cal.predict_proba(faces), atol=1e-4)


def test_calibrate_refuses_bad_requests_and_leaves_the_model_untouched(tiny, tmp_path):
    path, cache = tiny
    before = path.read_bytes()
    out = CliRunner().invoke(app, ["calibrate", "bundled", "--data", str(cache)])
    assert out.exit_code == 2 and "pass -o" in out.output
    out = CliRunner().invoke(app, ["calibrate", str(path)])
    assert out.exit_code == 2 and "--data is required" in out.output
    out = CliRunner().invoke(app, ["calibrate", str(path), "--data", str(cache),
                                   "-o", str(tmp_path / "c.onnx")])
    assert out.exit_code == 2 and "must be a .pt file" in out.output
    out = CliRunner().invoke(app, ["calibrate", str(path), "--data", str(cache), "--split", "PrivateTest"])
    assert out.exit_code == 2 and "PrivateTest" in out.output
    assert path.read_bytes() == before and not (tmp_path / "c.onnx").exists()


def test_predict_uncalibrated_shows_the_raw_scores(tiny, tmp_path):
    from PIL import Image

    path, cache = tiny
    assert CliRunner().invoke(app, ["calibrate", str(path), "--data", str(cache)]).exit_code == 0
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 48), dtype=np.uint8)).save(face)
    answers = {}
    for flags in ([], ["--uncalibrated"]):
        out = CliRunner().invoke(app, ["predict", str(path), str(face), "--no-detect", "--json", *flags])
        assert out.exit_code == 0, out.output
        answers[bool(flags)] = json.loads(out.output)["photos"][0]["faces"][0]["probabilities"]
    raw = np.array(list(answers[True].values()))
    t = read_checkpoint(path)["calibration"]["temperature"]
    np.testing.assert_allclose(list(answers[False].values()), apply_temperature(raw[None], t)[0], atol=1e-4)
    assert max(answers[True].values()) > max(answers[False].values())  # T > 1 softens


def test_training_calibrates_its_checkpoints(tmp_path):
    from ferlab.core.config import load_config
    from ferlab.training import train

    rng = np.random.default_rng(0)
    n = 70
    data = FerData(rng.integers(0, 256, (2 * n, 48, 48), dtype=np.uint8), np.arange(2 * n) % 7,
                   np.array(["Training"] * n + ["PublicTest"] * n), np.arange(2 * n).astype(str),
                   FER2013_EMOTIONS)
    cfg = load_config(None, ["train.epochs=1", "train.batch_size=32", "model.block_num=1",
                             "model.layer_num=1", "model.filters_in_each_block=[4]", "train.device=cpu"])
    logs = []
    train(cfg, tmp_path / "run", data=data, log=logs.append)
    for name in ("best.pt", "last.pt"):
        entry = read_checkpoint(tmp_path / "run" / name)["calibration"]
        assert entry["split"] == "PublicTest" and entry["n"] == n and entry["temperature"] > 0
    assert any("temperature" in line for line in logs)
