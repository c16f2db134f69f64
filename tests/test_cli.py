"""The CLI through Typer's CliRunner, on synthetic data written to disk."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_MODEL, make_faces
from PIL import Image
from typer.testing import CliRunner

from ferlab.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def write_csv(path, n=70, bad_row=None):
    x, y = make_faces(n)
    lines = ["emotion, pixels, Usage"]
    for i in range(n):
        usage = "Training" if i < n * 2 // 3 else "PublicTest"
        pixels = " ".join(map(str, x[i].ravel()))
        if i == bad_row:
            pixels = pixels[: len(pixels) // 2]
        lines.append(f"{y[i]},{pixels},{usage}")
    path.write_text("\n".join(lines))
    return path


def test_prepare_prints_counts_and_writes_cache(tmp_path):
    csv = write_csv(tmp_path / "fer.csv")
    result = invoke("prepare", csv, "-o", tmp_path / "fer.npz")
    assert result.exit_code == 0, result.output
    assert "Training" in result.output and "PublicTest" in result.output
    assert (tmp_path / "fer.npz").exists()


def test_prepare_bad_input_leaves_nothing(tmp_path):
    csv = write_csv(tmp_path / "fer.csv", bad_row=5)
    result = invoke("prepare", csv, "-o", tmp_path / "fer.npz")
    assert result.exit_code == 2
    assert "line 7" in result.output and "pixels, expected 2304" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer.csv"]
    skipped = invoke("prepare", csv, "-o", tmp_path / "fer.npz", "--skip-bad")
    assert skipped.exit_code == 0 and "skipped 1 bad items" in skipped.output


def test_train_evaluate_predict(tmp_path):
    csv = write_csv(tmp_path / "fer.csv", n=210)
    run = tmp_path / "run"
    result = invoke("train", "--data", csv, "--out", run, "--epochs", "3", "--seed", "1", *TINY_MODEL)
    assert result.exit_code == 0, result.output
    assert "epoch   3/3" in result.output
    assert "train.epochs" not in (run / "config.yaml").read_text()  # sections, not dotted keys
    ev = invoke("evaluate", run, "--data", csv, "--json")
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.output.strip().splitlines()[-1])
    assert {"split", "n", "accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(report)
    assert report["split"] == "PublicTest" and report["n"] == 70
    assert report["per_class"]["happy"].keys() >= {"precision", "recall", "f1", "support"}
    table = invoke("evaluate", run / "best.pt", "--data", csv)
    assert "macro avg" in table.output and (run / "confusion_PublicTest.png").exists()

    x, _ = make_faces(2, seed=9)
    for i in range(2):
        Image.fromarray(x[i]).resize((64, 64)).save(tmp_path / f"face{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    pred = invoke("predict", run, tmp_path / "face0.png", tmp_path / "face1.png", "--json", "--no-detect")
    assert pred.exit_code == 0, pred.output
    photos = json.loads(pred.output)["photos"]
    assert len(photos) == 2 and set(photos[0]["faces"][0]["probabilities"]) >= {"angry", "neutral"}
    mixed = invoke("predict", run, tmp_path / "face0.png", tmp_path / "broken.jpg", "--no-detect")
    assert mixed.exit_code == 1 and "broken.jpg: unreadable or truncated image" in mixed.output
    assert "face0.png" in mixed.output


def test_train_errors_are_clear(tmp_path):
    csv = write_csv(tmp_path / "fer.csv")
    bad = invoke("train", "--data", csv, "--out", tmp_path / "r", "model.block_num=5",
                 "model.filters_in_each_block=[32,64,128,256,512]", "model.pool_size=4")
    assert bad.exit_code == 2 and "below 1x1" in bad.output
    assert not (tmp_path / "r" / "last.pt").exists()
    only_train = tmp_path / "train_only.csv"
    kept = [line for line in csv.read_text().splitlines() if "PublicTest" not in line]
    only_train.write_text("\n".join(kept))
    missing = invoke("train", "--data", only_train, "--out", tmp_path / "r2", *TINY_MODEL,
                     "data.val_split=PublicTest")
    assert missing.exit_code == 2 and "splits present: Training" in missing.output
    held = invoke("train", "--data", only_train, "--out", tmp_path / "r3", "--epochs", "1", *TINY_MODEL)
    assert held.exit_code == 0 and "no validation split in the data: holding out" in held.output
    resume = invoke("train", "--data", csv, "--resume")
    assert resume.exit_code == 2 and "--out" in resume.output




@pytest.mark.parametrize("name", ["seed_cnn", "vgg"])
def test_models_summary(name):
    result = invoke("models", name)
    assert result.exit_code == 0 and "MFLOPs" in result.output


def test_evaluate_missing_split(tmp_path):
    csv = write_csv(tmp_path / "fer.csv", n=140)
    run = tmp_path / "run"
    assert invoke("train", "--data", csv, "--out", run, "--epochs", "1", *TINY_MODEL).exit_code == 0
    result = invoke("evaluate", run, "--data", csv, "--split", "PrivateTest")
    assert result.exit_code == 2
    assert "'PrivateTest' is not in this data; splits present: Training, PublicTest" in result.output


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    """The CLI boundary: every UserError is one `error:` line and exit 2; anything else (a
    bug in ferlab, even a plain ValueError) propagates with its traceback."""
    import ferlab.data
    from ferlab.core.errors import InputError

    def user_error(*args, **kwargs):
        raise InputError("--every must be >= 1, got 0")

    def bug(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    runner = CliRunner()
    out = tmp_path / "c.npz"
    monkeypatch.setattr(ferlab.data, "load_dataset", user_error)
    result = runner.invoke(app, ["prepare", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 2 and "error: --every must be >= 1, got 0" in result.output
    assert result.exception is not None and isinstance(result.exception, SystemExit)
    monkeypatch.setattr(ferlab.data, "load_dataset", bug)
    result = runner.invoke(app, ["prepare", str(tmp_path), "-o", str(out)])
    assert isinstance(result.exception, ValueError) and "error:" not in result.output


def test_every_error_a_user_can_cause_is_a_user_error():
    """No module raises a bare built-in error for a user's input: each raise names a class
    derived from UserError (the CLI shows those as one line), except the listed
    programming errors, which must keep their traceback."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "ferlab"
    builtin = {"ValueError", "FileNotFoundError", "RuntimeError", "OSError", "KeyError", "IndexError"}
    programming_errors = {("models/registry.py", "ValueError")}  # a model registered twice
    found = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                if name in builtin:
                    found.add((path.relative_to(src).as_posix(), name))
    assert found == programming_errors


def test_one_model_resolver_and_help_built_from_the_shipped_names(tmp_path):
    """Every command reads a model reference through shipped.resolve_model_ref, and
    `predict` tells a model from a photo by the same rules (a run folder holding only
    model.pt is a model, not a folder of photos)."""
    from pathlib import Path

    from ferlab import cli
    from ferlab.inference.shipped import (
        BUNDLED_NAMES,
        RUN_FOLDER_MODELS,
        is_model_ref,
        model_help,
        resolve_model_ref,
    )

    run, photos = tmp_path / "run", tmp_path / "photos"
    run.mkdir(), photos.mkdir()
    (run / "model.pt").write_bytes(b"x")
    Image.new("L", (48, 48)).save(photos / "a.png")
    assert resolve_model_ref(run) == run / "model.pt" and is_model_ref(str(run))
    (run / "best.pt").write_bytes(b"x")
    assert resolve_model_ref(run) == run / "best.pt" == run / RUN_FOLDER_MODELS[0]
    assert not is_model_ref(str(photos)) and not is_model_ref(str(photos / "a.png"))
    assert resolve_model_ref("fast") == BUNDLED_NAMES["fast"] and is_model_ref("fast")
    assert resolve_model_ref(None, default=lambda: Path("d.pt")) == Path("d.pt")
    assert all(name in model_help() for name in BUNDLED_NAMES)
    source = Path(cli.__file__).read_text()
    assert "fast-int8" not in source and "bundled-int8" not in source  # no hand-typed list
