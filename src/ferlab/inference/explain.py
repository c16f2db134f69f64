"""Saliency: where the network looked when it read a face.

Two methods from captum (PyTorch's own interpretability library):

    gradcam               Grad-CAM on the last convolution the input passes through at
                          6 px or more (of every member, for an ensemble): coarse,
                          class-specific, cheap (one forward and one backward pass)
    integrated_gradients  attributions on the input pixels, integrated from a mean-grey
                          face (the preprocessing's zero): fine-grained, ~32 passes

`saliency_maps(classifier, faces, targets)` returns one map per face in [0, 1] at
the model's input size; `overlay` colours one over a crop or a region of a photo.
The map explains the plain forward pass of the network, without TTA: the class
explained is the one the classifier predicts with its own TTA unless named.
ONNX exports carry no gradients: saliency needs the PyTorch checkpoint.

Depends on: errors, classifier (require_torch), models (the model API, ensemble members), preprocess; captum,
matplotlib (colour maps), torch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from ..data.preprocess import preprocess
from ..models import implements_api
from ..models.ensemble import without_member_tta

METHODS = ("gradcam", "integrated_gradients")
IG_STEPS = 32


def check_method(method: str) -> str:
    method = method.replace("-", "_")
    if method not in METHODS:
        raise InputError(
            f"saliency method must be one of {', '.join(m.replace('_', '-') for m in METHODS)}, "
            f"got {method!r}"
        )
    return method


MIN_CAM_SIDE = 6  # Grad-CAM maps coarser than this say little about a 48 px face


def last_convolutions(model: nn.Module, input_size: int = 48) -> list[nn.Module]:
    """Grad-CAM's layer per ensemble member (a model with `members`), or for the whole
    model: the last Conv2d the input passes through whose output is still at least
    MIN_CAM_SIDE px (else the last one). Found by running the model, not by module order:
    a ResNet block registers its shortcut conv after its main path, and the deepest
    layer of a five-stage net is 3x3, too coarse to point at an eye or a mouth."""
    groups = list(getattr(model, "members", None) or [model])
    order: list[tuple[nn.Module, int]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: order.append((mod, min(out.shape[-2:]))))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 1, input_size, input_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for group in groups:
        # The feature extractor's stages (the model API, models/api.py) hold the candidates;
        # the probe above gives their order of execution and output sizes.
        net = getattr(group, "net", group)
        inside = {id(m) for stage in net.stages() for m in stage.modules()} if implements_api(net) \
            else {id(m) for m in group.modules()}
        mine = [(m, side) for m, side in order if id(m) in inside]
        if mine:
            fine = [m for m, side in mine if side >= MIN_CAM_SIDE]
            layers.append(fine[-1] if fine else mine[-1][0])
    if not layers:
        raise InputError(
            "saliency: the model has no convolution to explain with Grad-CAM; use method integrated-gradients"
        )
    return layers


def _explainable(model: nn.Module) -> nn.Module:
    """An fp32 eval copy without in-place activations (they would overwrite the
    activations whose gradients Grad-CAM reads) and, for an ensemble, without the
    members' TTA (the map explains the plain forward pass)."""
    model = without_member_tta(copy.deepcopy(model).float().eval())
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """(N, H, W) -> [0, 1] per map; an all-zero map stays zero."""
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    span = flat.max(1).values.view(-1, 1, 1) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps)).numpy()


def saliency_maps(
    classifier: Any,
    faces: np.ndarray,
    targets: Sequence[int] | None = None,
    method: str = "gradcam",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces (N, H, W) -> (maps (N, H, W) in [0, 1], the class ids explained).

    `targets` default to the classifier's predictions (its TTA, calibrated scores).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    from .classifier import require_torch

    method = check_method(method)
    torch_classifier = require_torch(classifier, "saliency")
    faces = np.asarray(faces)
    if faces.ndim != 3 or faces.dtype != np.uint8:
        raise InputError(f"saliency: faces must be uint8 (N, H, W), got {faces.dtype} {faces.shape}")
    if targets is None:
        targets = classifier.predict_proba(faces).argmax(1) if len(faces) else np.zeros(0, int)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(faces):
        raise InputError(f"saliency: {len(targets)} targets for {len(faces)} faces")
    if len(faces) and not (0 <= targets.min() and targets.max() < len(classifier.class_names)):
        raise InputError(f"saliency: class ids must be in 0..{len(classifier.class_names) - 1}")
    device = torch_classifier.runtime.device
    model = _explainable(torch_classifier.model).to(device)
    size = faces.shape[-1] if len(faces) else classifier.preprocessing.image_size
    out = []
    for i in range(0, len(faces), batch_size):
        x = preprocess(torch.from_numpy(faces[i : i + batch_size]).to(device), classifier.preprocessing)
        target = torch.from_numpy(targets[i : i + batch_size]).to(device)
        if method == "gradcam":
            total = 0.0
            for layer in last_convolutions(model, x.shape[-1]):
                # relu_attributions=False: members are summed first, the ReLU is applied once.
                cam = LayerGradCam(model, layer).attribute(x, target=target)
                total = total + LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
            maps = torch.relu(total)[:, 0]
        else:
            ig = IntegratedGradients(model)
            attr = ig.attribute(
                x,
                baselines=torch.zeros_like(x),
                target=target,
                n_steps=IG_STEPS,
                internal_batch_size=batch_size * 4,
            )
            maps = attr.abs().sum(1)
        out.append(maps.detach().float().cpu())
    maps = torch.cat(out) if out else torch.zeros(0, size, size)
    return _normalise(maps), targets


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map in [0, 1] -> RGB uint8 via a matplotlib colour map."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a map (any size, resized to the image) over a gray or RGB uint8 image; the
    colour's weight grows with the map (0.15 to `alpha`), so cold areas stay readable."""
    import cv2

    rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image[..., :3]
    h, w = rgb.shape[:2]
    resized = np.clip(cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
    weight = (0.15 + (alpha - 0.15) * resized)[..., None]
    blended = rgb.astype(np.float32) * (1 - weight) + colorize(resized).astype(np.float32) * weight
    return np.clip(blended, 0, 255).astype(np.uint8)


def overlay_regions(
    rgb: np.ndarray, regions: Sequence[tuple[Sequence[int], np.ndarray]], alpha: float = 0.6
) -> np.ndarray:
    """A photo with each (x, y, w, h) region's map blended over that region only."""
    out = rgb[..., :3].copy()
    for (x, y, w, h), heat in regions:
        if w > 0 and h > 0:
            out[y : y + h, x : x + w] = overlay(out[y : y + h, x : x + w], heat, alpha)
    return out


def crop_overlay(crop: np.ndarray, heat: np.ndarray, side: int = 192) -> np.ndarray:
    """A gray face crop resized to `side` px with its map over it (RGB uint8)."""
    import cv2

    return overlay(cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR), heat)


def crop_panel(crop: np.ndarray, heat: np.ndarray, side: int = 192) -> np.ndarray:
    """The face crop and its heat overlay side by side, each `side` px: what --explain saves."""
    import cv2

    plain = np.repeat(cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)[..., None], 3, 2)
    return np.concatenate([plain, crop_overlay(crop, heat, side)], 1)


def save_explanations(
    rgb: np.ndarray,
    faces: list[dict[str, Any]],
    out_dir: Path,
    stem: str,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """PNGs for faces from `EmotionRecognizer.explain`: per face and class the crop beside
    its heatmap (`STEM_face0_happy.png`), and per class the photo with every face's map
    over its region (`STEM_happy_heatmap.png`, `STEM_predicted_heatmap.png` when each
    face shows its own predicted class: `classes` None). Each written atomically; returns
    the paths."""
    from PIL import Image

    from ..core.files import atomic_path
    from ..photos.faces import to_gray

    gray = to_gray(rgb)
    written: list[Path] = []

    def save(image: np.ndarray, name: str) -> None:
        path = out_dir / name
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        written.append(path)

    photo_maps: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    for i, face in enumerate(faces):
        x, y, w, h = face["crop"]
        for label, heat in face["saliency"].items():
            save(crop_panel(gray[y : y + h, x : x + w], heat), f"{stem}_face{i}_{label}.png")
            key = label if classes else "predicted"
            photo_maps.setdefault(key, []).append((face["crop"], heat))
    for key, regions in photo_maps.items():
        save(overlay_regions(rgb, regions), f"{stem}_{key}_heatmap.png")
    return written


__all__ = [
    "METHODS",
    "check_method",
    "colorize",
    "crop_overlay",
    "crop_panel",
    "last_convolutions",
    "overlay",
    "overlay_regions",
    "saliency_maps",
    "save_explanations",
]
