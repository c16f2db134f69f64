"""Saliency maps (#16): the map points at the evidence, every model kind explains, the CLI writes PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.runtime import Runtime
from ferlab.data.preprocess import Preprocessing, preprocess
from ferlab.inference.checkpoint import LoadedModel
from ferlab.inference.classifier import TorchClassifier, load_classifier
from ferlab.inference.explain import last_convolutions, saliency_maps
from ferlab.inference.shipped import SAMPLE_PHOTO
from ferlab.models import build_model

runner = CliRunner()
REGION = (slice(4, 20), slice(4, 20))  # top-left 16x16: the only place the label is written


def region_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise everywhere; inside REGION, horizontal stripes (class 0) or vertical (class 1).
    Elsewhere the same stripes appear at random as distractors, unrelated to the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(110, 25, (n, 48, 48))
    rows = np.arange(16)
    stripes = {0: np.tile((rows % 4 < 2)[:, None], (1, 16)), 1: np.tile((rows % 4 < 2)[None, :], (16, 1))}
    for i, y in enumerate(labels):
        images[i][REGION] += 90 * stripes[int(y)]
        decoy = stripes[int(rng.integers(0, 2))]
        images[i, 28:44, 28:44] += 90 * decoy  # a decoy patch, bottom right
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def region_classifier() -> TorchClassifier:
    torch.manual_seed(0)
    model = build_model("vgg", widths=[8, 16, 32], depth=2, dropout_rate=0.0, num_classes=2)
    x, y = region_task(768, 0)
    pp = Preprocessing()
    inputs, targets = preprocess(torch.from_numpy(x), pp), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    loaded = LoadedModel(
        model.eval(),
        ("horizontal", "vertical"),
        pp,
        {"model": {"name": "vgg", "args": {}}, "tta": "none"},
        Path("region.pt"),
    )
    return TorchClassifier(loaded, Runtime.create("cpu", "fp32"))


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_map_mass_concentrates_on_the_region_that_carries_the_label(region_classifier, method):
    x, y = region_task(64, 1)
    accuracy = (region_classifier.predict_proba(x).argmax(1) == y).mean()
    assert accuracy > 0.9, f"the toy model did not learn the task ({accuracy:.2f})"
    maps, targets = saliency_maps(region_classifier, x, method=method)
    assert maps.shape == (64, 48, 48) and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_array_equal(targets, region_classifier.predict_proba(x).argmax(1))
    share = maps.sum((1, 2))
    # The quadrant that holds REGION against the one that holds the decoy patch: a map
    # spread evenly would put 0.25 in each.
    inside = np.median(maps[:, :24, :24].sum((1, 2)) / share)
    decoy = np.median(maps[:, 24:, 24:].sum((1, 2)) / share)
    assert inside > 0.45 and inside > 3 * decoy, (inside, decoy)


def test_named_target_changes_the_map_and_bad_input_is_refused(region_classifier):
    x, _ = region_task(4, 2)
    m0, _ = saliency_maps(region_classifier, x, targets=[0, 0, 0, 0])
    m1, t1 = saliency_maps(region_classifier, x, targets=[1, 1, 1, 1])
    assert list(t1) == [1, 1, 1, 1] and not np.allclose(m0, m1)
    with pytest.raises(ValueError, match="class ids"):
        saliency_maps(region_classifier, x, targets=[0, 1, 2, 0])
    with pytest.raises(ValueError, match="2 targets for 4 faces"):
        saliency_maps(region_classifier, x, targets=[0, 1])
    with pytest.raises(ValueError, match="uint8"):
        saliency_maps(region_classifier, x.astype(np.float32))
    with pytest.raises(ValueError, match="gradcam"):
        saliency_maps(region_classifier, x, method="lime")


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("seed_cnn", {"block_num": 2, "layer_num": 1, "filters_in_each_block": [8, 16]}),
        ("vgg", {"widths": [8, 16], "depth": 1}),
        ("resnet18_transfer", {"input_size": 64}),
    ],
)
def test_every_registry_kind_explains(name, kwargs):
    model = build_model(name, **kwargs).eval()
    layers = last_convolutions(model)
    assert len(layers) == 1 and isinstance(layers[0], torch.nn.Conv2d)
    loaded = LoadedModel(
        model, tuple("abcdefg"), Preprocessing(), {"model": {"name": name}, "tta": "none"}, Path(f"{name}.pt")
    )
    clf = TorchClassifier(loaded, Runtime.create("cpu", "fp32"))
    x = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    maps, _ = saliency_maps(clf, x)
    assert maps.shape == (3, 48, 48) and np.isfinite(maps).all()


def test_gradcam_layer_is_the_last_run_at_six_pixels_not_the_last_registered():
    # At 96 px, layer4 runs at 3x3 and layer3 at 6x6; layer3's first block registers its
    # 1x1 shortcut conv after conv2 but runs it first.
    model = build_model("resnet18_transfer", input_size=96).eval()
    assert last_convolutions(model) == [model.base.layer3[1].conv2]
    fast = build_model("vgg", widths=[16, 32, 64, 128, 128]).eval()  # the fast model's shape
    assert last_convolutions(fast) == [fast[-14]]  # stage 4 (6x6), not stage 5 (3x3)


def test_cli_explain_writes_crop_and_photo_heatmaps(tmp_path):
    out = tmp_path / "maps"
    r = runner.invoke(
        app, ["explain", str(SAMPLE_PHOTO), "-o", str(out), "--class", "happy", "--class", "sad", "--json"]
    )
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "astronaut_face0_happy.png",
        "astronaut_face0_sad.png",
        "astronaut_happy_heatmap.png",
        "astronaut_sad_heatmap.png",
    ]
    panel = np.asarray(Image.open(out / "astronaut_face0_happy.png"))
    assert panel.shape == (192, 384, 3)
    photo = np.asarray(Image.open(out / "astronaut_happy_heatmap.png").convert("RGB"))
    original = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    assert photo.shape == original.shape
    face = json.loads(r.output)["photos"][0]["faces"][0]
    x, y, w, h = face["crop"]
    changed = np.abs(photo.astype(int) - original).sum(2) > 0
    assert changed[y : y + h, x : x + w].mean() > 0.5 and not changed[:, :x].any()  # only the face region


def test_predict_explain_and_onnx_refusal(tmp_path):
    out = tmp_path / "ex"
    r = runner.invoke(app, ["predict", "fast", str(SAMPLE_PHOTO), "--explain", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut_face0_happy.png",
        "astronaut_predicted_heatmap.png",
    ]
    assert "2 heatmaps written" in r.output
    r = runner.invoke(app, ["predict", "fast-int8", str(SAMPLE_PHOTO), "--explain", str(tmp_path / "no")])
    assert r.exit_code == 2 and "saliency needs a PyTorch checkpoint" in r.output
    assert not (tmp_path / "no").exists()
    r = runner.invoke(app, ["explain", str(SAMPLE_PHOTO), "--class", "joy", "-o", str(tmp_path / "no")])
    assert r.exit_code == 2 and "'joy' is not one of this model's classes" in r.output


def test_recognizer_explain_matches_detect_emotions():
    from ferlab import EmotionRecognizer

    rec = EmotionRecognizer("fast", precision="fp32")
    plain = rec.detect_emotions(SAMPLE_PHOTO)
    explained = rec.explain(SAMPLE_PHOTO)
    assert [f["emotion"] for f in plain] == [f["emotion"] for f in explained]
    assert explained[0]["probabilities"] == pytest.approx(plain[0]["probabilities"])
    heat = explained[0]["saliency"][explained[0]["emotion"]]
    assert heat.shape == (48, 48) and heat.max() == pytest.approx(1.0)
    assert load_classifier("fast").class_names == rec.class_names
