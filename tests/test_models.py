"""Every registered model builds, runs forward and backward; the seed CNN keeps the seed's maths."""

from __future__ import annotations

import pytest
import torch

from ferlab.models import build_model, list_models, model_summary
from ferlab.models.registry import ModelConfigError

SEED_FINAL = dict(block_num=4, layer_num=2, filters_in_each_block=[64, 128, 256, 512],
                  kernel_size=3, pool_size=4, strides=2, dropout_rate=0.2)
# Models that cannot be built from defaults alone: an ensemble needs its members.
TINY_MEMBERS = [{"name": "vgg", "args": {"widths": [8, 16], "depth": 1}, "tta": t} for t in ("none", "flip")]
ARGS = {"ensemble": {"members": TINY_MEMBERS}}


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, **ARGS.get(name, {}))
    x = torch.randn(2, 1, 48, 48)
    out = model(x)
    assert out.shape == (2, 7)
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 6]))
    loss.backward()
    assert torch.isfinite(loss)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


@pytest.mark.parametrize("name", list_models())
def test_models_take_a_class_count(name):
    assert build_model(name, num_classes=3, **ARGS.get(name, {}))(torch.randn(2, 1, 48, 48)).shape == (2, 3)


@pytest.mark.parametrize("name", [n for n in list_models() if n != "ensemble"])
def test_every_trainable_model_implements_the_model_api(name):
    """forward == forward_head(forward_features); the classifier is the layer that maps to
    the classes; reset_classifier changes the class count; stages run input to output."""
    from ferlab.models import implements_api

    torch.manual_seed(0)
    model = build_model(name).eval()
    assert implements_api(model)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
    head_name, head = model.get_classifier()
    assert dict(model.named_modules())[head_name] is head and head.out_features == 7
    stages = model.stages()
    assert stages and not any(p is q for s in stages for p in s.parameters() for q in head.parameters())
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier()[1].out_features == 3


def test_an_ensemble_is_not_fine_tuned_as_one():
    from ferlab.inference.checkpoint import CheckpointError
    from ferlab.models import implements_api
    from ferlab.training.finetune import apply_finetune

    model = build_model("ensemble", **ARGS["ensemble"])
    assert not implements_api(model)
    with pytest.raises(CheckpointError, match="members one by one"):
        apply_finetune(model, "head")


def test_seed_final_shapes_params_and_flops():
    s = model_summary(build_model("seed_cnn", **SEED_FINAL))
    pools = [shape for _, kind, shape, _ in s.rows if kind == "MaxPool2d"]
    # Keras 'valid' pooling, pool 4 stride 2: 48 -> 23 -> 10 -> 4 -> 1
    assert pools == [(64, 23, 23), (128, 10, 10), (256, 4, 4), (512, 1, 1)]
    convs = [p for _, kind, _, p in s.rows if kind == "Conv2d"]
    assert convs[:2] == [1 * 9 * 64 + 64, 64 * 9 * 64 + 64]
    assert s.params == 4_687_815
    assert 690 < s.mflops < 700  # ~0.70 GFLOP per forward pass
    assert "Dropout" in s.table() and "MFLOPs" in s.table()


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
def test_same_padding_keeps_size_for_every_kernel(kernel):
    model = build_model("seed_cnn", block_num=1, layer_num=2, filters_in_each_block=[4],
                        kernel_size=kernel, pool_size=2, strides=2)
    feats = model[:-3](torch.randn(1, 1, 48, 48))
    assert feats.shape == (1, 4, 24, 24)


def test_too_many_blocks_are_refused_with_sizes():
    with pytest.raises(ModelConfigError) as e:
        build_model("seed_cnn", block_num=5, filters_in_each_block=[32, 64, 128, 256, 512],
                    pool_size=4, strides=2)
    assert "23x23 -> 10x10 -> 4x4 -> 1x1 -> <1x1" in str(e.value)


def test_bad_options_are_refused():
    with pytest.raises(ModelConfigError, match="no option blocks"):
        build_model("seed_cnn", blocks=3)
    with pytest.raises(ModelConfigError, match="unknown model 'resnet999'"):
        build_model("resnet999")
    with pytest.raises(ModelConfigError, match="filters_in_each_block has 2 entries"):
        build_model("seed_cnn", block_num=3, filters_in_each_block=[8, 16])


def test_seed_cnn_equals_the_reports_layer_order():
    """ReLU after the pool (our speed-up) gives the same outputs and gradients as the report's
    conv-ReLU-conv-ReLU-pool order."""
    torch.manual_seed(0)
    ours = build_model("seed_cnn", block_num=2, layer_num=2, filters_in_each_block=[4, 8],
                       pool_size=4, strides=2)
    convs = [m for m in ours if isinstance(m, torch.nn.Conv2d)]
    reference = torch.nn.Sequential(
        convs[0], torch.nn.ReLU(), convs[1], torch.nn.ReLU(), torch.nn.MaxPool2d(4, 2),
        convs[2], torch.nn.ReLU(), convs[3], torch.nn.ReLU(), torch.nn.MaxPool2d(4, 2),
        torch.nn.Flatten(), ours[-2], ours[-1],
    )
    x = torch.randn(3, 1, 48, 48)
    ours.eval()
    reference.eval()
    a = ours(x)
    a.sum().backward()
    grads = [c.weight.grad.clone() for c in convs]
    for c in convs:
        c.weight.grad = None
    b = reference(x)
    b.sum().backward()
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(g, c.weight.grad, atol=1e-5) for g, c in zip(grads, convs))
