"""Ensemble files: built from members, loaded by the one loader, and usable wherever a model is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_data, make_faces
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.config import load_config
from ferlab.core.runtime import Runtime
from ferlab.data.preprocess import Preprocessing
from ferlab.evaluation.scores import evaluate
from ferlab.inference.checkpoint import checkpoint_dict, load_checkpoint, read_checkpoint, save_checkpoint
from ferlab.inference.classifier import OnnxClassifier, load_classifier
from ferlab.inference.ensemble_file import build_ensemble
from ferlab.inference.explain import saliency_maps
from ferlab.inference.export import export_onnx
from ferlab.inference.temperature import apply_temperature
from ferlab.models import build_model
from ferlab.models.ensemble import Ensemble, EnsembleMember
from ferlab.photos.recognizer import EmotionRecognizer
from ferlab.training import train
from ferlab.training.distill import load_teacher

runner = CliRunner()
EMOTIONS7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CPU32 = dict(device="cpu", precision="fp32")
FACES = make_faces(24, seed=5)[0]


def member(path, seed, *, tta="none", temperature=None, classes=EMOTIONS7, pp=Preprocessing(),
           widths=(8, 16)):
    """A tiny vgg checkpoint with random weights (seeded): members need not be trained to
    test how they are combined."""
    torch.manual_seed(seed)
    args = {"widths": list(widths), "depth": 1, "num_classes": len(classes)}
    model = build_model("vgg", **args)
    with torch.no_grad():  # BatchNorm statistics other than the identity, so they are tested too
        model(torch.randn(64, 1, 48, 48))
    model.eval()
    extra = {"tta": tta}
    if temperature is not None:
        extra["calibration"] = {"method": "temperature", "temperature": temperature}
    ckpt = checkpoint_dict(model, model_name="vgg", model_args=args, class_names=classes, preprocessing=pp,
                           epoch=1, metrics={"val_accuracy": 0.5}, **extra)
    save_checkpoint(ckpt, path)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [member(root / "a.pt", 0, tta="flip", temperature=2.0),
            member(root / "b.pt", 1, tta="tencrop", widths=(8, 12)),
            member(root / "c.pt", 2, temperature=0.5)]


@pytest.fixture(scope="module")
def ens(members, tmp_path_factory):
    return build_ensemble(members, tmp_path_factory.mktemp("ens") / "ens.pt", half=False, log=lambda s: None)


def test_ensemble_is_the_mean_of_its_members_calibrated_tta_probabilities(members, ens):
    ref = [load_classifier(m, **CPU32).predict_proba(FACES) for m in members]  # each its own TTA
    got = load_classifier(ens, **CPU32).predict_proba(FACES)
    assert np.abs(got - np.mean(ref, 0)).max() < 1e-5
    # The temperatures matter: without them the average is another one.
    raw = [load_classifier(m, **CPU32, calibrated=False).predict_proba(FACES) for m in members]
    assert np.abs(got - np.mean(raw, 0)).max() > 1e-3
    assert np.allclose(apply_temperature(got, 1.0), got)


def test_round_trip_metadata_flattening_and_half_precision(members, ens, tmp_path):
    loaded = load_checkpoint(ens)
    assert isinstance(loaded.model, Ensemble) and len(loaded.model.members) == 3
    assert [m.tta for m in loaded.model.members] == ["flip", "tencrop", "none"]
    assert [m.temperature for m in loaded.model.members] == [2.0, 1.0, 0.5]
    assert loaded.meta["tta"] == "none" and loaded.class_names == EMOTIONS7
    assert [r["source"] for r in loaded.meta["members"]] == [f"{m.parent.name}/{m.name}" for m in members]
    assert loaded.description.startswith("ensemble of 3 (vgg, vgg, vgg)")
    # An ensemble given as a member brings its members, not a nested ensemble.
    bigger = build_ensemble([ens, members[0]], tmp_path / "bigger.pt", tta="flip", log=lambda s: None)
    big = load_checkpoint(bigger)
    assert len(big.model.members) == 4 and all(m.tta == "flip" for m in big.model.members)
    assert read_checkpoint(bigger)["state_dict"]["members.0.net.0.weight"].dtype == torch.float16
    half_path = build_ensemble(members, tmp_path / "half.pt", log=lambda s: None)  # float16, the default
    full, half = load_classifier(ens, **CPU32), load_classifier(half_path, **CPU32)
    nbytes = [sum(t.numel() * t.element_size() for t in read_checkpoint(p)["state_dict"].values())
              for p in (ens, half_path)]
    assert nbytes[1] < 0.6 * nbytes[0]
    assert np.abs(full.predict_proba(FACES) - half.predict_proba(FACES)).max() < 5e-3


def test_mismatched_members_are_refused_by_name_and_nothing_is_written(members, tmp_path):
    own = member(tmp_path / "own.pt", 3, classes=("neg", "neutral", "pos", "x", "y", "z", "w"))
    other_pp = member(tmp_path / "pp.pt", 4, pp=Preprocessing(mean=0.4))
    out = tmp_path / "bad.pt"
    for bad, says in ((own, "classes neg, neutral"), (other_pp, "input .*mean.*0.4")):
        with pytest.raises(ValueError, match=f"{bad}: {says}"):
            build_ensemble([members[0], bad], out, log=lambda s: None)
    r = runner.invoke(app, ["ensemble", str(members[0]), str(own), "-o", str(out)])
    assert r.exit_code == 2 and "own.pt: classes" in r.output and "share one label set" in r.output
    r = runner.invoke(app, ["ensemble", str(members[0]), "-o", str(out)])
    assert r.exit_code == 2 and "at least two models" in r.output
    r = runner.invoke(app, ["ensemble", str(members[0]), str(tmp_path / "missing.pt"), "-o", str(out)])
    assert r.exit_code == 2 and "missing.pt" in r.output
    r = runner.invoke(app, ["ensemble", *map(str, members[:2]), "-o", str(tmp_path / "e.onnx")])
    assert r.exit_code == 2 and "choose a .pt output" in r.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_tta_one_mode_per_member_where_the_views_pay(members, tmp_path):
    """`--tta flip,none,tencrop` sets each member's views; an ensemble given as a model
    counts as its members; a list of the wrong length is refused and nothing is written."""
    from ferlab.inference.checkpoint import load_checkpoint

    pair, out = tmp_path / "pair.pt", tmp_path / "three.pt"
    r = runner.invoke(app, ["ensemble", *map(str, members[:2]), "--tta", "tencrop", "-o", str(pair)])
    assert r.exit_code == 0, r.output
    three = [str(pair), str(members[2])]
    r = runner.invoke(app, ["ensemble", *three, "--tta", "flip,none,tencrop", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert [m.tta for m in load_checkpoint(out).model.members] == ["flip", "none", "tencrop"]
    bad = tmp_path / "bad.pt"
    r = runner.invoke(app, ["ensemble", str(pair), str(members[2]), "--tta", "flip,tencrop", "-o", str(bad)])
    assert r.exit_code == 2 and "2 modes for 3 members" in r.output and not bad.exists()
    r = runner.invoke(app, ["ensemble", str(pair), str(members[2]), "--tta", "flip,x,none", "-o", str(bad)])
    assert r.exit_code == 2 and "--tta must be one of" in r.output and not bad.exists()


def test_onnx_export_holds_every_member_and_matches_pytorch(ens, tmp_path):
    loaded = load_checkpoint(ens)
    path = export_onnx(loaded, tmp_path / "ens.onnx")
    onnx_probs = OnnxClassifier(path).predict_proba(FACES)
    torch_probs = load_classifier(ens, **CPU32).predict_proba(FACES)
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4


def test_evaluate_reports_each_member_beside_the_ensemble(members, ens, tmp_path):
    data = make_data(n_train=14, n_val=70)
    result = evaluate(load_classifier(ens, **CPU32), data, "PublicTest")
    alone = [evaluate(load_classifier(m, **CPU32), data, "PublicTest")["accuracy"] for m in members]
    assert [m["accuracy"] for m in result["members"]] == pytest.approx(alone)
    # The mean taken from the members' scores is the ensemble's own forward pass.
    outer = evaluate(load_classifier(ens, **CPU32), data, "PublicTest", tta="flip")
    assert len(outer["members"]) == 3 and 0 <= outer["accuracy"] <= 1
    from ferlab.data import save_cache

    save_cache(data, tmp_path / "d.npz")
    r = runner.invoke(app, ["evaluate", str(ens), "--data", str(tmp_path / "d.npz"), "--split", "PublicTest",
                            "--out", str(tmp_path / "rep"), "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "ensemble of 3" in r.output and r.output.count("  member ") == 3
    assert f"accuracy {result['accuracy']:.4f}" in r.output
    # Members are named by run folder and file (or shipped name), never by the absolute path
    # they had where the ensemble was built: the file travels, its builder's folders do not.
    members_lines = [line for line in r.output.splitlines() if line.startswith("  member ")]
    assert not any(str(tmp_path.parent) in line for line in members_lines), members_lines
    shipped = runner.invoke(app, ["evaluate", "ensemble", "--data", str(tmp_path / "d.npz"), "--split",
                                  "PublicTest", "--out", str(tmp_path / "rep2")])
    lines = [line for line in shipped.output.splitlines() if line.startswith("  member ")]
    assert shipped.exit_code == 0 and len(lines) == 3 and lines[0].endswith("bundled")
    assert not any(line.split()[-1].startswith("/") for line in lines), lines


def test_ensemble_teaches_predicts_and_explains(ens, tmp_path):
    teacher = load_teacher(str(ens), EMOTIONS7, Preprocessing(), Runtime.create(**CPU32))
    assert all(m.tta == "none" for m in teacher.modules() if isinstance(m, EnsembleMember))
    cfg = load_config(None, ["model.name=vgg", "model.widths=[8,16]", "model.depth=1", "train.batch_size=32",
                             "train.precision=fp32", "train.epochs=1", f"train.teacher={ens}"])
    history = train(cfg, tmp_path / "student", data=make_data(n_train=64, n_val=32), log=lambda s: None)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])

    rec = EmotionRecognizer(ens, **CPU32, detect=False)
    faces = rec.detect_emotions(FACES[0])
    assert len(faces) == 1 and abs(sum(faces[0]["probabilities"].values()) - 1) < 1e-4
    clf = load_classifier(ens, **CPU32)
    maps, targets = saliency_maps(clf, FACES[:4])
    assert maps.shape == (4, 48, 48) and np.isfinite(maps).all()
    assert (targets == clf.predict_proba(FACES[:4]).argmax(1)).all()
    # The members keep their TTA for prediction: saliency worked on a copy.
    assert [m.tta for m in clf.model.members] == ["flip", "tencrop", "none"]


def test_registry_refuses_an_empty_or_malformed_ensemble():
    with pytest.raises(ValueError, match="at least one member"):
        build_model("ensemble")
    with pytest.raises(ValueError, match="member 0 must be a mapping"):
        build_model("ensemble", members=[3])
    with pytest.raises(ValueError, match="member 0: unknown field"):
        build_model("ensemble", members=[{"name": "vgg", "weights": 1}])


def test_inference_batches_are_counted_in_views_not_faces():
    """1,024 faces of the ten-crop int8 ensemble were 20,480 views in one call (9 GB in
    `ferlab evaluate`): a call now holds at most VIEWS_PER_BATCH views, the ensemble's own
    members' views included."""
    import numpy as np

    from ferlab.inference.classifier import load_classifier
    from ferlab.inference.tta import VIEWS_PER_BATCH

    clf = load_classifier("ensemble-int8")
    assert clf.inner_views == 14  # flip, flip and ten-crop members, inside the graph
    rows, logits = [], clf.logits
    clf.logits = lambda x: rows.append(len(x)) or logits(x)
    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    probs = clf.predict_proba(faces)
    assert probs.shape == (40, 7) and max(rows) * clf.inner_views <= VIEWS_PER_BATCH
    rows.clear()
    clf.predict_proba(faces, tta="flip")  # outer TTA on top: fewer faces a call again
    assert max(rows) * clf.inner_views <= VIEWS_PER_BATCH  # rows = faces x outer views
    torch_clf = load_classifier("ensemble", device="cpu")
    assert torch_clf.inner_views == 10  # members run one after another
