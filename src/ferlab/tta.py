"""Test-time augmentation (TTA): the modes, the crops' geometry, and the views on numpy arrays.

The PyTorch views are in `inference.tta_views`; these numpy ones serve ONNX Runtime,
so a prediction with an exported model never imports PyTorch (start-up time). Both
take their crops from `tencrop_boxes`, and their resize is the same bilinear map
(OpenCV's INTER_LINEAR and PyTorch's align_corners=False both sample at pixel
centres); a test holds the two within 1e-4 on unit-variance inputs.

Depends on: errors; numpy, OpenCV.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

TTA_MODES = ("none", "flip", "tencrop")
VIEW_COUNT = {"none": 1, "flip": 2, "tencrop": 10}  # forward passes per face
TENCROP_FRACTION = 0.9  # crop side as a share of the image; each crop is resized back
# Inference batches are counted in views (faces x TTA views x an ensemble's own views), not
# faces: 1,024 faces of a ten-crop ensemble were 20,480 views at once, 5-9 GB of activations
# in `ferlab evaluate`. 256 views keep a batch's activations to a few hundred MB.
VIEWS_PER_BATCH = 256


def faces_per_batch(views_per_face: int, views: int = VIEWS_PER_BATCH) -> int:
    """How many faces one forward pass takes when each costs `views_per_face` views."""
    return max(1, views // max(1, views_per_face))


def check_tta(mode: str | None, name: str = "tta") -> str | None:
    """The one check of a TTA setting; `name` is the field or option named in the error."""
    if mode is not None and mode not in TTA_MODES:
        raise ConfigError(f"{name} must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return mode


def tencrop_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the five crops: four corners and the centre."""
    ch, cw = round(h * TENCROP_FRACTION), round(w * TENCROP_FRACTION)
    tops, lefts = (0, 0, h - ch, h - ch, (h - ch) // 2), (0, w - cw, 0, w - cw, (w - cw) // 2)
    return [(t, lft, ch, cw) for t, lft in zip(tops, lefts)]


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, C, h', w') float32 -> (N, C, h, w), bilinear at pixel centres."""
    import cv2

    n, c = x.shape[:2]
    planes = np.ascontiguousarray(x.reshape(n * c, *x.shape[2:]).transpose(1, 2, 0))
    # cv2.resize takes at most 512 channels at once.
    out = [cv2.resize(planes[..., i : i + 512], (w, h), interpolation=cv2.INTER_LINEAR)
           for i in range(0, n * c, 512)]
    out = np.concatenate([o.reshape(h, w, -1) for o in out], -1)
    return out.transpose(2, 0, 1).reshape(n, c, h, w)


def tta_views_np(x: np.ndarray, mode: str) -> list[np.ndarray]:
    """`inference.tta_views` for a preprocessed numpy batch (N, C, H, W)."""
    check_tta(mode)
    if mode == "flip":
        return [x, x[..., ::-1]]
    if mode == "tencrop":
        h, w = x.shape[-2:]
        crops = [_resize(x[..., t : t + ch, lft : lft + cw], h, w) for t, lft, ch, cw in tencrop_boxes(h, w)]
        return crops + [c[..., ::-1] for c in crops]
    return [x]
