"""scripts/: the ensemble recipe end to end on tiny synthetic data, and the cache splitter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import make_data

from ferlab.data import load_cache, save_cache
from ferlab.inference.classifier import load_classifier

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _recipe(data: Path, out: Path, *budgets: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FERLAB": f"{sys.executable} -m ferlab", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPTS / "train_ensemble.sh"), str(data), str(out), *budgets],
                          env=env, capture_output=True, text=True, timeout=900)


def test_ensemble_recipe_trains_members_ensemble_and_students(tmp_path):
    data = tmp_path / "tiny.npz"
    save_cache(make_data(n_train=140, n_val=70), data)
    out = tmp_path / "zoo"
    # Two members (plain and robust augmentation), one epoch each, then both students.
    r = _recipe(data, out, "0.01", "0.01", MEMBERS="2", PARALLEL="2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    assert "member vgg-s11: best val_accuracy" in summary and "member robust-s12: best" in summary
    assert "split PublicTest: 70 images" in summary  # the ensemble scored, members beside it
    ens = load_classifier(out / "ens.pt")
    assert len(ens.model.members) == 2 and ens.tta == "none"  # members carry ten-crop inside
    for name, tta in (("student.pt", "tencrop"), ("fast.pt", "none"), ("fast-int8.onnx", "none")):
        model = load_classifier(out / name)
        assert model.tta == tta and tuple(model.class_names) == tuple(ens.class_names)
        assert f"{name} (" in summary
    for name in ("student", "fast"):  # distilled from the ensemble written above
        assert f"train.teacher={out / 'ens.pt'}" in (out / "summary.txt").read_text()
        assert (out / name / "last.pt").exists()


def test_ensemble_recipe_refuses_bad_calls_and_writes_nothing(tmp_path, synthetic_cache):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = _recipe(synthetic_cache, out)
    assert r.returncode == 2 and "exists" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    r = _recipe(tmp_path / "missing.npz", tmp_path / "new")
    assert r.returncode == 2 and "missing.npz" in r.stderr and not (tmp_path / "new").exists()
    r = _recipe(synthetic_cache, tmp_path / "new", MEMBERS="9")
    assert r.returncode == 2 and "MEMBERS=9" in r.stderr and not (tmp_path / "new").exists()
    r = subprocess.run(["bash", str(SCRIPTS / "train_ensemble.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "DATA OUT" in r.stderr  # the usage


def test_cache_parts_round_trip_restores_the_cache_exactly(tmp_path):
    source = tmp_path / "fer.npz"
    save_cache(make_data(n_train=50, n_val=23), source)
    script = [sys.executable, str(SCRIPTS / "cache_parts.py")]
    subprocess.run([*script, "split", str(source), str(tmp_path / "p" / "fer"), "3"], check=True)
    parts = sorted((tmp_path / "p").glob("fer.part*.npz"))
    assert len(parts) == 3 and {len(load_cache(p).labels) for p in parts} == {24, 25}
    joined = tmp_path / "joined.npz"
    subprocess.run([*script, "join", str(tmp_path / "p" / "fer"), str(joined)], check=True)
    a, b = np.load(source), np.load(joined)
    assert sorted(a.files) == sorted(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    parts[1].unlink()  # a part missing: refused, nothing written
    r = subprocess.run([*script, "join", str(tmp_path / "p" / "fer"), str(tmp_path / "j2.npz")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "need all 3" in r.stderr and not (tmp_path / "j2.npz").exists()
