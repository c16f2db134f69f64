"""Face detection, cropping and annotation for photos and video frames (OpenCV).

Detection uses the Haar cascade that opencv-python-headless 4.x ships
(`cv2.data.haarcascades`); OpenCV 5 dropped both, hence the `<5` pin. A crop is
the detected square grown by a margin, because FER2013 faces include some
forehead and chin around the detector's tight box.

Depends on: OpenCV, numpy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# alt2 over "default": as many faces found on FER2013 validation faces pasted into photos,
# and far fewer double boxes on one face (benchmarks/everyday.py --data, "detector" table).
DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
WINDOW = 24  # the cascades' training window: the smallest face they can see, in pixels
# OpenCV slides the window in 1 px steps only at scales above 2 (2 px steps below, which
# misses faces): big images are shrunk until the smallest face sought is this size.
SCAN_PX = 64
# The smallest face sought by default, as a share of the image's shorter side: portraits,
# selfies and webcams. Group photos with small faces: min_size=0.05 (several times slower).
DEFAULT_MIN_FACE = 0.15


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


class FaceDetector:
    """OpenCV Haar-cascade face detector; `detect(gray)` returns boxes, largest first.

    `min_size` is the smallest face sought, as a share of the image's shorter side: the
    cascade scans every position at every scale from that size up, so the cost falls
    with the square of it (640x480, two cores: ~20 ms at 0.15, ~40 ms at 0.1, ~10 ms at
    0.2). Big images are first shrunk until that face is SCAN_PX, which bounds the cost
    without thinning the scan. Scales 1.2 apart and two neighbouring hits found as
    many faces as OpenCV's usual 1.1 and 3-5 hits in about half the time
    (benchmarks/everyday.py --data, "detector" table).

    OpenCV's cascade is not safe to run from two threads at once (the server classifies
    two photos at a time): each thread gets its own copy.
    """

    def __init__(
        self,
        cascade: str | Path | None = None,
        scale_factor: float = 1.2,
        min_neighbors: int = 2,
        min_size: float = DEFAULT_MIN_FACE,
    ):
        if not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(
                "this OpenCV has no CascadeClassifier (OpenCV 5 removed it); "
                "install opencv-python-headless<5"
            )
        if not 0 < min_size <= 1:
            raise ValueError(f"min face size must be a share of the image's shorter side in (0, 1], "
                             f"got {min_size}")
        if not scale_factor > 1:
            raise ValueError(f"detector scale factor must be > 1, got {scale_factor}")
        self._path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / DEFAULT_CASCADE
        self._local = threading.local()
        _ = self._cascade  # loaded now: a bad cascade file fails here, not at the first photo
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    @property
    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self._path))
            if cascade.empty():
                raise RuntimeError(f"{self._path}: cannot load the face-detector cascade")
        return cascade

    def detect(self, gray: np.ndarray) -> list[FaceBox]:
        min_px = max(WINDOW, min(gray.shape[:2]) * self.min_size)
        scale = SCAN_PX / min_px
        scale = 1.0 if scale > 0.75 else scale  # never enlarge; a small shrink costs more than it saves
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                     interpolation=cv2.INTER_AREA)
        side = max(WINDOW, round(min_px * scale))
        found = self._cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        h, w = gray.shape[:2]
        boxes = []
        for x, y, bw, bh in found:  # back to the full image's pixels
            x0, y0 = int(x / scale), int(y / scale)
            boxes.append(FaceBox(x0, y0, min(w - x0, round(bw / scale)), min(h - y0, round(bh / scale))))
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


def crop_bounds(shape: tuple[int, ...], box: FaceBox, margin: float = 0.1) -> FaceBox:
    """The box grown by `margin` of its size on each side, clipped to an image of `shape`."""
    dx, dy = int(box.w * margin), int(box.h * margin)
    h, w = shape[:2]
    x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
    x1, y1 = min(w, box.x + box.w + dx), min(h, box.y + box.h + dy)
    return FaceBox(x0, y0, x1 - x0, y1 - y0)


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
