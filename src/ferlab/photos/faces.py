"""Faces in images: boxes, the crop each classifier sees, box geometry, drawing.

The detectors themselves live in `detection/` (YuNet by default, the Haar cascade as
the fallback); this module is what they and their users share. A crop is not the
detector's box: FER2013's faces include some forehead and chin and are square, so each
detector has a `CropRule` (centre shift, side, which side of the box it scales),
measured so that the classifiers see FER2013's framing (benchmarks/crop_rule.py).

Depends on: errors, OpenCV, numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.errors import InputError, UserError

# The smallest face sought by default, as a share of the image's shorter side: portraits,
# selfies and webcams. Group photos with small faces: min_size=0.05 (slower).
DEFAULT_MIN_FACE = 0.15


class DetectorUnavailable(UserError, RuntimeError):
    """A face detector that cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def iou_matrix(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> np.ndarray:
    """(len(a), len(b)) intersection over union of [x, y, w, h] boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a, float)[:, None, :], np.asarray(b, float)[None, :, :]
    lo = np.maximum(a[..., :2], b[..., :2])  # top-left of the intersection, (x, y)
    hi = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass(frozen=True)
class CropRule:
    """Where the classifier's square crop lies around a detector's box: centred on the box's
    centre moved by (dx * w, dy * h), with a side of `side` times the box's width, height
    or the larger of the two (`basis`)."""

    side: float = 1.2
    basis: str = "width"  # width | height | max
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self):
        if self.basis not in ("width", "height", "max"):
            raise InputError(f"crop basis must be width, height or max, got {self.basis!r}")
        if not 0.5 <= self.side <= 3:
            raise InputError(f"crop side must be 0.5-3 times the box, got {self.side}")

    @classmethod
    def from_margin(cls, margin: float) -> CropRule:
        """The box grown by `margin` of its size on each side (the rule before CropRule)."""
        return cls(side=1 + 2 * margin, basis="width")


def crop_box(shape: tuple[int, ...], box: FaceBox, rule: CropRule) -> FaceBox:
    """The square `rule` places around `box`, clipped to an image of `shape`."""
    base = {"width": box.w, "height": box.h, "max": max(box.w, box.h)}[rule.basis]
    side = max(1, round(rule.side * base))
    cx, cy = box.x + box.w / 2 + rule.dx * box.w, box.y + box.h / 2 + rule.dy * box.h
    left, top = round(cx - side / 2), round(cy - side / 2)
    h, w = shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(w, left + side), min(h, top + side)
    if x1 <= x0 or y1 <= y0:  # a box outside the image (a caller's own detector): its clipped self
        x0, y0 = min(max(0, box.x), w - 1), min(max(0, box.y), h - 1)
        x1, y1 = max(x0 + 1, min(w, box.x + box.w)), max(y0 + 1, min(h, box.y + box.h))
    return FaceBox(x0, y0, x1 - x0, y1 - y0)


def check_min_size(min_size: float) -> None:
    if not 0 < min_size <= 1:
        raise InputError(f"min face size must be a share of the image's shorter side in (0, 1], "
                         f"got {min_size}")


def check_hints(hints: Sequence[Sequence[float]]) -> list[list[float]]:
    """Hints as [x, y, w, h] numbers with a positive size, or a clear error naming the bad one."""
    out = []
    for box in hints:
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"a face hint must be [x, y, w, h] numbers, got {box!r}") from None
        if not (w > 0 and h > 0):
            raise InputError(f"a face hint needs a positive width and height, got {box!r}")
        out.append([x, y, w, h])
    return out


def to_gray(rgb_or_gray: np.ndarray) -> np.ndarray:
    if rgb_or_gray.ndim == 2:
        return rgb_or_gray
    if rgb_or_gray.shape[2] == 4:
        return cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGBA2GRAY)
    return cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2GRAY)


def draw_faces(rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A copy of an RGB image with each face's box and 'emotion 87%' label drawn."""
    out = np.ascontiguousarray(rgb.copy())
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    scale = max(0.4, min(out.shape[:2]) / 900)
    for face in faces:
        x, y, w, h = face["box"]
        label = f"{face['emotion']} {face['probabilities'][face['emotion']]:.0%}"
        if "track" in face:  # a video's face track
            label = f"#{face['track']} {label}"
        cv2.rectangle(out, (x, y), (x + w, y + h), (40, 220, 40), thickness)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 4)
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 4), (40, 220, 40), -1)
        cv2.putText(out, label, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return out
