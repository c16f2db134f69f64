"""The HTML evaluation report (#16): content, self-containment, figures from Python, Chromium."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import TINY_MODEL, make_data
from matplotlib.figure import Figure
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.config import load_config
from ferlab.data import save_cache
from ferlab.evaluation.report import build_report, most_confident_mistakes, render_html
from ferlab.evaluation.scores import Scored, score
from ferlab.inference.classifier import load_classifier
from ferlab.training import train

runner = CliRunner()


@pytest.fixture(scope="module")
def run_and_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    train(
        load_config(None, [*TINY_MODEL, "train.epochs=2"]), root / "run", data=make_data(), log=lambda _: None
    )
    save_cache(make_data(), root / "faces.npz")
    return root / "run", root / "faces.npz"


def test_most_confident_mistakes_per_class_surest_first():
    result = {"class_names": ["a", "b", "c"]}
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([1, 2, 0, 0, 1, 0])
    confidence = np.array([0.6, 0.9, 0.99, 0.7, 0.8, 0.5])
    scored = Scored(result, np.zeros((6, 48, 48), np.uint8), labels, predicted, confidence, predicted)
    assert most_confident_mistakes(scored, per_class=1) == [1, 3, 5]
    assert most_confident_mistakes(scored, per_class=5) == [1, 0, 3, 5]  # right answers never shown


def test_report_from_python_has_figures_and_saliency(run_and_cache):
    run, _ = run_and_cache
    classifier = load_classifier(run, precision="fp32")
    scored = score(classifier, make_data(), "PublicTest")
    report = build_report(classifier, scored, per_class=2)
    assert set(report.figures) >= {"confusion", "per_class", "reliability"}
    assert all(isinstance(f, Figure) for f in report.figures.values())  # notebooks show them inline
    wrong = scored.labels[scored.predicted != scored.labels]
    assert len(report.mistakes) == sum(min(int((wrong == c).sum()), 2) for c in range(7))
    assert all(m["heat"] is not None and m["heat"].shape == (48, 48) for m in report.mistakes)
    assert all(m["true"] != m["predicted"] for m in report.mistakes)
    assert report.model["classes"][3] == "happy" and "config" in report.model


def test_onnx_report_says_why_there_is_no_saliency(run_and_cache):
    _, cache = run_and_cache
    classifier = load_classifier("fast-int8")
    report = build_report(classifier, score(classifier, make_data(), "PublicTest"))
    assert "needs the PyTorch checkpoint" in report.saliency_note
    assert all(m["heat"] is None for m in report.mistakes)
    assert "No saliency: saliency needs the PyTorch checkpoint" in render_html(report)


def test_cli_html_report_is_self_contained_and_renders_in_chromium(run_and_cache, tmp_path):
    run, cache = run_and_cache
    page = tmp_path / "out" / "report.html"
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(cache),
            "--split",
            "PublicTest",
            "--html",
            str(page),
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"report page: {page}" in r.output
    text = page.read_text()
    for section in ("metrics", "confusion", "per-class", "reliability", "mistakes", "provenance"):
        assert f'id="{section}"' in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to fetch
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert not list(page.parent.glob("*.tmp*"))

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        view = browser.new_page(viewport={"width": 1100, "height": 900})
        view.goto(page.as_uri())
        assert view.title().startswith("ferlab evaluation")
        broken = view.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth)).length"
        )
        assert broken == 0
        assert view.locator("#metrics tr").count() >= 6
        assert view.locator("table.confusion").count() == 2
        shot = tmp_path / "report.png"
        view.screenshot(path=str(shot), full_page=True)
        browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[0] > 1500 and pixels.std() > 10  # a long page with figures, not a blank one


def test_html_refuses_a_folder_before_scoring(run_and_cache, tmp_path):
    run, cache = run_and_cache
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(cache), "--html", str(tmp_path)])
    assert r.exit_code == 2 and "a folder; give the page's file name" in r.output
