"""The photos the detector benchmarks share: FER2013 faces pasted into larger photos, and
face-free crops of the demo photo.

`pasted_photos(part, n)`: n faces of a split, each scaled to 20-60% of the shorter side
and pasted at a random place into a 256x256, 480x360 or 640x480 photo of blurred noise;
the face's square and its label are the truth. `face_free_crops()`: 60 crops of the demo
photo that avoid the astronaut's head, shrunk or grown to 256-640 px: every box on them
is a false one. Both are fixed by their seeds, so every run scores the same photos.
"""

from __future__ import annotations

import cv2
import numpy as np

from ferlab.data.preprocess import as_rgb_array
from ferlab.inference.shipped import SAMPLE_PHOTO
from ferlab.photos.faces import iou_matrix, to_gray

SIZES = ((256, 256), (480, 360), (640, 480))
HEAD = (150, 30, 300, 210)  # x0, y0, x1, y1 of the astronaut's head (and hair) in the demo photo


def pasted_photos(part, n: int, seed: int = 0) -> list[tuple[np.ndarray, list[int], int]]:
    """[(gray photo, [x, y, side, side] of the face, label)] for n faces of a split."""
    rng = np.random.default_rng(seed)
    photos = []
    for k, i in enumerate(rng.choice(len(part.images), n, replace=False)):
        w, h = SIZES[k % len(SIZES)]
        canvas = cv2.GaussianBlur(rng.normal(120, 40, (h, w)).astype(np.float32), (0, 0), 8)
        side = int(rng.uniform(0.2, 0.6) * min(w, h))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        canvas[y : y + side, x : x + side] = cv2.resize(part.images[i].astype(np.float32), (side, side),
                                                        interpolation=cv2.INTER_CUBIC)
        photos.append((np.clip(canvas, 0, 255).astype(np.uint8), [x, y, side, side], int(part.labels[i])))
    return photos


def on_face(box: list[int], truth: list[int]) -> bool:
    """A box is on the pasted face when it overlaps the face's square by IoU > 0.3, or its
    centre lies inside the square and its height is a third to 1.5 times the square's: a
    FER2013 image frames the face with some background, so a detector's tight box (YuNet's)
    can overlap the square by less than 30% and still be the face."""
    x, y, w, h = box
    tx, ty, side, _ = truth
    cx, cy = x + w / 2, y + h / 2
    inside = tx <= cx <= tx + side and ty <= cy <= ty + side and side / 3 <= h <= 1.5 * side
    return inside or iou_matrix([box], [truth])[0, 0] > 0.3


def face_free_crops(n: int = 60, seed: int = 1) -> list[np.ndarray]:
    """n gray crops of the demo photo that do not overlap the head, at 256-640 px."""
    gray = to_gray(as_rgb_array(SAMPLE_PHOTO))
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    while len(crops) < n:
        side = int(rng.integers(96, 260))
        x, y = int(rng.integers(0, gray.shape[1] - side)), int(rng.integers(0, gray.shape[0] - side))
        if x < HEAD[2] and x + side > HEAD[0] and y < HEAD[3] and y + side > HEAD[1]:
            continue  # touches the head
        w, h = SIZES[len(crops) % len(SIZES)]
        crops.append(cv2.resize(gray[y : y + side, x : x + side], (w, h), interpolation=cv2.INTER_CUBIC))
    return crops
