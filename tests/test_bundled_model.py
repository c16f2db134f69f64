"""The model shipped inside the package: loads with no arguments, works offline, beats `fer`."""

from __future__ import annotations

import json

import pytest
from conftest import real_zip_or_skip
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.recognizer import BUNDLED_MODEL, SAMPLE_PHOTO, EmotionRecognizer

runner = CliRunner()
pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason=f"no bundled model at {BUNDLED_MODEL}")

FER_PACKAGE_PUBLICTEST = 0.652  # the `fer` package's bundled model on PublicTest (NOTES.md)


def test_bundled_model_is_small_and_self_describing():
    assert BUNDLED_MODEL.stat().st_size <= 10 * 1024 * 1024
    rec = EmotionRecognizer()
    assert rec.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_demo_photo_is_happy(tmp_path):
    faces = EmotionRecognizer().detect_emotions(SAMPLE_PHOTO)
    assert len(faces) == 1 and faces[0]["emotion"] == "happy"
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo.jpg")])
    assert result.exit_code == 0 and "happy" in result.output and (tmp_path / "demo.jpg").exists()


def test_predict_without_checkpoint_uses_bundled_model():
    result = runner.invoke(app, ["predict", str(SAMPLE_PHOTO), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["photos"][0]["faces"][0]["emotion"] == "happy"


def test_bundled_model_beats_fer_package_on_publictest(tmp_path):
    data = real_zip_or_skip()
    result = runner.invoke(app, ["evaluate", "--data", str(data), "--split", "PublicTest", "--json",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["n"] == 3589
    assert report["accuracy"] > FER_PACKAGE_PUBLICTEST + 0.01, report["accuracy"]
