"""ImageNet backbones: torchvision-format weights load unchanged; frozen, partial, extra convs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_data

from ferlab.checkpoint import load_checkpoint
from ferlab.config import load_config
from ferlab.export import export_onnx
from ferlab.models import build_model
from ferlab.models.registry import ModelConfigError
from ferlab.recognizer import EmotionRecognizer
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
