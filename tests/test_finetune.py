"""Fine-tuning on your own faces: own class folders, a new head, frozen stages; distillation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_data, make_faces
from PIL import Image
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.config import ConfigError, load_config
from ferlab.data import DataError, load_dataset
from ferlab.inference.checkpoint import load_checkpoint, read_checkpoint
from ferlab.inference.classifier import OnnxClassifier
from ferlab.inference.export import export_onnx
from ferlab.models import build_model
from ferlab.photos.recognizer import EmotionRecognizer
from ferlab.training import train
from ferlab.training.distill import distillation_loss
from ferlab.training.finetune import apply_finetune, load_init_weights, model_stages

TINY_VGG = ["model.name=vgg", "model.widths=[8,16]", "model.depth=1", "train.batch_size=32",
            "train.precision=fp32"]
OWN = ("positive", "negative", "neutral")
# FER2013 ids -> own label: happy/surprise positive; angry/disgust/fear/sad negative.
TO_OWN = {0: 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 0, 6: 2}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A small FER2013-class vgg trained for two epochs on synthetic faces."""
    out = tmp_path_factory.mktemp("parent") / "run"
    cfg = load_config(None, [*TINY_VGG, "train.epochs=2"])
    train(cfg, out, data=make_data(), log=lambda s: None)
    return out / "best.pt"


def write_own_folders(root, n_per_split=(60, 30), splits=("train", "val"), seed=3):
    """Own dataset as image files: <split>/<class>/*.png (or <class>/*.png if splits is empty)."""
    x, y = make_faces(sum(n_per_split), seed)
    counts = np.cumsum((0, *n_per_split))
    for s, split in enumerate(splits or ("",)):
        for i in range(counts[s], counts[s + 1]):
            folder = root / split / OWN[TO_OWN[int(y[i])]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"img{i}.png")
    return root


def test_own_class_folders_are_read_with_their_names(tmp_path):
    root = write_own_folders(tmp_path / "own")
    data, _ = load_dataset(root, classes="folders")
    assert data.class_names == ("negative", "neutral", "positive")  # sorted folder names
    assert data.split_names == ["Training", "val"]
    ordered, _ = load_dataset(root, classes="positive,negative,neutral")
    assert ordered.class_names == OWN
    # The same image gets the id of its folder's name under either order.
    names = [data.class_names[i] for i in data.labels]
    assert names == [ordered.class_names[i] for i in ordered.labels]


def test_unknown_or_fer_folders_name_the_way_out(tmp_path):
    root = write_own_folders(tmp_path / "own")
    with pytest.raises(DataError, match=r"unknown class folder 'negative' .*--classes folders"):
        load_dataset(root)
    with pytest.raises(DataError, match=r"unknown class folder 'neutral' \(classes: positive, negative\)"):
        load_dataset(root, classes="positive,negative")
    with pytest.raises(DataError, match="at least two distinct names"):
        load_dataset(root, classes="positive,Positive")
    csv = tmp_path / "fer.csv"
    csv.write_text("emotion,pixels\n0," + " ".join(["0"] * 2304) + "\n")
    with pytest.raises(DataError, match="own class names need an image folder"):
        load_dataset(csv, classes="folders")


def test_bare_class_folders_get_a_stratified_holdout(tmp_path):
    root = write_own_folders(tmp_path / "own", n_per_split=(140,), splits=())
    cfg = load_config(None, [*TINY_VGG, "train.epochs=1", f"data.source={root}",
                             "data.classes=folders", "data.holdout=0.4"])
    lines = []
    train(cfg, tmp_path / "run", log=lines.append)
    assert any("holding out 56 of 140 Training images" in s for s in lines)
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["val_split"] == "holdout-Training"
    assert ckpt["class_names"] == ["negative", "neutral", "positive"]
    # `ferlab evaluate RUN --data FOLDERS` scores the same 56 held-out faces again (there is
    # no evaluation split to find in bare class folders), and gets the run's own accuracy.
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(root),
                                 "--json", "--tta", "none"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    assert result["split"] == "holdout-Training" and result["n"] == 56
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert abs(result["accuracy"] - best["metrics"]["val_accuracy"]) < 1e-6
    # `ferlab calibrate RUN --data FOLDERS` fits on the same held-out faces as training did.
    r = CliRunner().invoke(app, ["calibrate", str(tmp_path / "run" / "best.pt"), "--data", str(root),
                                 "-o", str(tmp_path / "calibrated.pt")])
    assert r.exit_code == 0, r.output
    again = read_checkpoint(tmp_path / "calibrated.pt")["calibration"]
    assert again["split"] == "holdout-Training" and again["n"] == best["calibration"]["n"] == 56
    assert abs(again["temperature"] - best["calibration"]["temperature"]) < 1e-3


def test_a_few_dozen_faces_train_for_a_few_epochs(tmp_path, parent):
    """Fine-tuning on a tiny set (36 faces, 5 epochs: one step each) used to crash in the
    one-cycle schedule with a ZeroDivisionError."""
    root = write_own_folders(tmp_path / "few", n_per_split=(36,), splits=())
    r = CliRunner().invoke(app, ["train", "--init", str(parent), "--data", str(root), "--classes", "folders",
                                 "--epochs", "5", "--out", str(tmp_path / "few-run"), "train.precision=fp32"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "few-run" / "best.pt").is_file()
    # A temperature fitted on a handful of held-out faces would be noise: training says it
    # left the run uncalibrated, and `ferlab calibrate` refuses with the reason.
    assert "not calibrated: 5 validation faces are too few" in r.output
    assert "calibration" not in read_checkpoint(tmp_path / "few-run" / "best.pt")
    r = CliRunner().invoke(app, ["calibrate", str(tmp_path / "few-run"), "--data", str(root)])
    assert r.exit_code == 2 and "holdout-Training: 5 labelled faces are too few" in r.output, r.output


def test_init_replaces_the_head_and_head_mode_freezes_the_rest(tmp_path, parent):
    root = write_own_folders(tmp_path / "own")
    before = read_checkpoint(parent)["state_dict"]
    cfg = load_config("finetune", ["train.epochs=2", "train.batch_size=32", "train.precision=fp32",
                                   f"train.init={parent}", "train.finetune=head",
                                   f"data.source={root}", "data.classes=positive,negative,neutral"])
    lines = []
    train(cfg, tmp_path / "ft", log=lines.append)
    assert any("new classifier" in s and "3 classes" in s for s in lines), lines
    after = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert after["class_names"] == list(OWN)
    assert after["model"]["name"] == "vgg" and after["model"]["args"]["widths"] == [8, 16]
    head = [k for k in after["state_dict"] if k.endswith(".weight")][-1]
    assert after["state_dict"][head].shape[0] == 3
    for k, v in before.items():
        if k.split(".")[0] != head.split(".")[0] and "num_batches_tracked" not in k:
            assert torch.equal(after["state_dict"][k], v), f"{k} changed although frozen"
    # The user's labels travel everywhere: checkpoint, recognizer, ONNX metadata.
    loaded = load_checkpoint(tmp_path / "ft")
    assert loaded.class_names == OWN
    faces = EmotionRecognizer(tmp_path / "ft" / "best.pt", detect=False).detect_emotions(
        np.full((48, 48), 128, np.uint8))
    assert set(faces[0]["probabilities"]) == set(OWN) and faces[0]["emotion"] in OWN
    onnx = OnnxClassifier(export_onnx(loaded, tmp_path / "own.onnx"))
    assert onnx.class_names == OWN


def test_finetune_n_trains_exactly_the_last_stages(parent):
    model = load_checkpoint(parent).model
    stages = model_stages(model)
    assert len(stages) == 2  # vgg [8, 16], depth 1: one conv+BN per stage
    apply_finetune(model, "1")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    last_stage = {n for n, m in model.named_modules() if any(m is s for s in stages[-1])}
    expected = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] in last_stage}
    head = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert trainable == expected | {f"{head}.weight", f"{head}.bias"}
    with pytest.raises(ConfigError, match="train.finetune"):
        apply_finetune(model, "some")


def test_same_classes_carry_every_weight(parent):
    ckpt = read_checkpoint(parent)
    model = build_model("vgg", widths=[8, 16], depth=1).eval()
    message = load_init_weights(model, ckpt, tuple(ckpt["class_names"]))
    assert message.startswith("all weights loaded")
    x = torch.randn(4, 1, 48, 48)
    assert torch.allclose(model(x), load_checkpoint(parent).model(x))


def test_init_refuses_a_different_model_section(tmp_path, parent):
    cfg = load_config(None, ["model.name=seed_cnn", "model.block_num=2", f"train.init={parent}",
                             "train.epochs=1"])
    with pytest.raises(ConfigError, match="the architecture comes from the checkpoint"):
        train(cfg, tmp_path / "x", data=make_data(), log=lambda s: None)


def test_cli_finetune_then_evaluate_with_own_labels(tmp_path, parent):
    root = write_own_folders(tmp_path / "own")
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--init", str(parent), "--data", str(root), "--classes", "folders",
                            "--finetune", "all", "--epochs", "1", "--batch-size", "32",
                            "--out", str(tmp_path / "ft"), "train.precision=fp32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "ft"), "--data", str(root), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    assert result["split"] == "val" and result["class_names"] == ["negative", "neutral", "positive"]
    assert result["n"] == 30


def test_distillation_loss_limits():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 7), torch.randn(8, 7), torch.randint(0, 7, (8,))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, 0.0, 4.0), ce)
    assert distillation_loss(s, s, y, 1.0, 4.0).abs() < 1e-6  # a student equal to its teacher
    assert distillation_loss(s, t, y, 1.0, 4.0) > 0


def test_distilled_student_moves_towards_its_teacher(tmp_path, parent):
    """With the whole loss on soft targets, training shrinks the student-teacher KL."""
    data = make_data()
    cfg = load_config(None, [*TINY_VGG, "train.epochs=4", "train.lr=3e-3", f"train.teacher={parent}",
                             "train.distill_weight=1.0", "train.distill_temperature=2.0"])
    teacher = load_checkpoint(parent).model
    x = (torch.from_numpy(data.split("PublicTest").images).float()[:, None] / 255 - 0.5) / 0.25

    def kl(student):
        with torch.no_grad():
            return float(torch.nn.functional.kl_div(student(x).log_softmax(1), teacher(x).log_softmax(1),
                                                    reduction="batchmean", log_target=True))

    torch.manual_seed(cfg.train.seed)  # the student's initial weights, as train() draws them
    before = kl(build_model("vgg", widths=[8, 16], depth=1).eval())
    history = train(cfg, tmp_path / "student", data=data, log=lambda s: None)
    assert len(history) == 4 and np.isfinite(history[-1]["loss"])
    after = kl(load_checkpoint(tmp_path / "student" / "last.pt").model)
    assert after < 0.5 * before, (before, after)
    other = load_dataset(write_own_folders(tmp_path / "own"), classes="folders")[0]
    with pytest.raises(ValueError, match="train.teacher .* classes"):
        train(cfg, tmp_path / "s2", data=other, log=lambda s: None)


def test_prepare_own_classes_then_finetune_from_the_cache(tmp_path, parent):
    root = write_own_folders(tmp_path / "own")
    runner = CliRunner()
    r = runner.invoke(app, ["prepare", str(root), "-o", str(tmp_path / "own.npz"), "--classes", "folders"])
    assert r.exit_code == 0, r.output
    assert "negative" in r.output and "wrote" in r.output
    r = runner.invoke(app, ["train", "--init", str(parent), "--data", str(tmp_path / "own.npz"),
                            "--finetune", "head", "--epochs", "1", "--batch-size", "32",
                            "--out", str(tmp_path / "ft"), "train.precision=fp32"])
    assert r.exit_code == 0, r.output
    assert read_checkpoint(tmp_path / "ft" / "last.pt")["class_names"] == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("override, message", [
    ("train.late_tta=tencorp", "train.late_tta must be one of none, flip, tencrop"),
    ("train.distill_weight=1.5", "train.distill_weight must be between 0 and 1"),
    ("train.finetune=some", "train.finetune must be all, head or a number"),
])
def test_bad_training_settings_fail_before_any_work(tmp_path, override, message):
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "absent.npz"), "--out",
                                 str(tmp_path / "run"), override])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "run").exists()
