"""The Haar-cascade face detector (OpenCV, 2001): the fallback where YuNet cannot run.

Detection uses the Haar cascade that opencv-python-headless 4.x ships
(`cv2.data.haarcascades`); OpenCV 5 dropped both, hence the `<5` pin. It finds frontal,
upright faces; heads turned three-quarters, tilted, or under a cap are often missed
(YuNet, detection/yunet.py, finds most of them).

Depends on: errors, faces (boxes, crops, hints), OpenCV, numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ...core.errors import InputError
from ..faces import (
    DEFAULT_MIN_FACE,
    CropRule,
    DetectorUnavailable,
    FaceBox,
    check_hints,
    check_min_size,
    iou_matrix,
)

# alt2 over "default": as many faces found on FER2013 validation faces pasted into photos,
# and far fewer double boxes on one face (benchmarks/everyday.py --data, "detector" table).
DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
WINDOW = 24  # the cascades' training window: the smallest face they can see, in pixels
# OpenCV slides the window in 1 px steps only at scales above 2 (2 px steps below, which
# misses faces): big images are shrunk until the smallest face sought is this size.
SCAN_PX = 64
# Two passes (`FaceDetector(two_pass=True)`, the default): a coarse scan of a copy shrunk
# until the smallest face is COARSE_PX proposes faces (every hit, overlaps merged); each is
# then confirmed by a fine scan of its own neighbourhood (the box grown by VERIFY_MARGIN per
# side, sizes VERIFY_SIZES of the proposal, scales 1.1 apart, 2n+1 hits). On 640x480
# this halves the detector's time at the same recall (benchmarks/everyday.py --data).
COARSE_PX = 24
VERIFY_MARGIN = 0.25
VERIFY_SIZES = (0.75, 1.35)
# The cascade needs the whole face in view: a face cut by the frame's edge (a webcam user
# leaning in, a head at the top of a photo) was lost. The scanned image gets a border of
# EDGE_PAD of its shorter side, the edge pixels repeated (fer pads too); a face is kept
# when at least EDGE_VISIBLE of its width and height lie inside the image, its box clipped
# to the image. On the benchmark clip, 120 of 120 frames instead of 88-90.
EDGE_PAD = 0.1
EDGE_VISIBLE = 0.6
# The crop the classifiers see: the square box grown by 15% a side. On 1,200 PublicTest
# faces pasted into photos, the 903 it found scored 71.9% with this crop, 71.5% with the
# 10% a side used before, 70.2% with the bare box, against 73.2% for their own FER2013
# framing (benchmarks/crop_rule.py --only crop).
HAAR_CROP = CropRule(side=1.3, basis="width")


class HaarDetector:
    """OpenCV Haar-cascade face detector; `detect(gray)` returns boxes, largest first.

    `min_size` is the smallest face sought, as a share of the image's shorter side: the
    cascade scans every position at every scale from that size up, so the cost falls
    with the square of it (one pass over 640x480 on one core: ~30 ms at 0.15, ~13 ms at
    0.2). Big images are first shrunk until that face is SCAN_PX, which bounds the cost
    without thinning the scan. Scales 1.2 apart and two neighbouring hits found as
    many faces as OpenCV's usual 1.1 and 3-5 hits in about half the time
    (benchmarks/everyday.py --data, "detector" table).

    By default a coarse pass proposes faces and a fine scan of each proposal's
    neighbourhood confirms it (`two_pass`, see COARSE_PX): the fine scan's boxes in
    about half the time of one fine pass over the whole image (`two_pass=False`).
    The image is scanned inside a border of repeated edge pixels (`edge_pad`), so that
    faces cut by the frame are found too.

    OpenCV's cascade is not safe to run from two threads at once (the server classifies
    two photos at a time): each thread gets its own copy.
    """

    name = "haar"
    crop_rule = HAAR_CROP

    def __init__(
        self,
        cascade: str | Path | None = None,
        scale_factor: float = 1.2,
        min_neighbors: int = 2,
        min_size: float = DEFAULT_MIN_FACE,
        two_pass: bool = True,
        edge_pad: float = EDGE_PAD,
    ):
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorUnavailable(
                "this OpenCV has no CascadeClassifier (OpenCV 5 removed it); "
                "install opencv-python-headless<5"
            )
        check_min_size(min_size)
        if not scale_factor > 1:
            raise InputError(f"detector scale factor must be > 1, got {scale_factor}")
        if not 0 <= edge_pad <= 0.5:
            raise InputError(f"edge padding must be a share of the shorter side in [0, 0.5], got {edge_pad}")
        self._path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / DEFAULT_CASCADE
        self._local = threading.local()
        _ = self._cascade  # loaded now: a bad cascade file fails here, not at the first photo
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.two_pass, self.edge_pad = two_pass, edge_pad

    @property
    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(str(self._path))
            if cascade.empty():
                raise DetectorUnavailable(f"{self._path}: cannot load the face-detector cascade")
        return cascade

    def detect(self, gray: np.ndarray, hints: Sequence[Sequence[int]] = ()) -> list[FaceBox]:
        """Faces in a gray image, largest first. `hints`: [x, y, w, h] boxes where faces
        were a moment ago (a video's live tracks), confirmed by the fine scan like the
        coarse pass's proposals, so a face the coarse pass misses in one frame is kept."""
        hints = check_hints(hints)
        min_px = max(WINDOW, min(gray.shape[:2]) * self.min_size)
        scale = SCAN_PX / min_px
        scale = 1.0 if scale > 0.75 else scale  # never enlarge; a small shrink costs more than it saves
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                     interpolation=cv2.INTER_AREA)
        side = max(WINDOW, round(min_px * scale))
        pad = round(self.edge_pad * min(small.shape[:2]))
        if pad:
            small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        if self.two_pass:
            found = self._confirmed(small, side, [[x * scale + pad, y * scale + pad, bw * scale, bh * scale]
                                                  for x, y, bw, bh in hints])
        else:
            found = self._scan(small, side)
        h, w = gray.shape[:2]
        boxes = []
        for x, y, bw, bh in found:  # back to the full image's pixels, clipped to it
            x0, y0 = max(0, int((x - pad) / scale)), max(0, int((y - pad) / scale))
            x1, y1 = min(w, round((x - pad + bw) / scale)), min(h, round((y - pad + bh) / scale))
            if min(x1 - x0, y1 - y0) >= EDGE_VISIBLE * bw / scale:  # not mostly outside the image
                boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0))
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)

    def _scan(self, gray: np.ndarray, side: int, max_side: int = 0, scale_factor: float = 0.0,
              min_neighbors: int = -1) -> list[tuple[int, int, int, int]]:
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=scale_factor or self.scale_factor,
            minNeighbors=self.min_neighbors if min_neighbors < 0 else min_neighbors,
            minSize=(side, side), maxSize=(max_side, max_side))
        return [tuple(int(v) for v in box) for box in found]

    def _confirmed(self, gray: np.ndarray, side: int,
                   hints: Sequence[Sequence[float]] = ()) -> list[tuple[int, int, int, int]]:
        """Coarse proposals and hints, each confirmed (or not) by a fine scan around it."""
        shrink = COARSE_PX / side
        if shrink > 0.8:  # already coarse: one fine scan of everything, hints included, costs no more
            return self._scan(gray, side)
        coarse = cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        h, w = gray.shape[:2]
        confirmed: list[tuple[int, int, int, int]] = []
        raw = self._scan(coarse, COARSE_PX, min_neighbors=0)
        # Every raw hit, overlapping ones merged (listed twice so that a lone hit survives
        # grouping): asking the coarse scan for 2 hits lost faces that a fine scan finds.
        proposals = [[v / shrink for v in box] for box in (cv2.groupRectangles(raw + raw, 1, 0.2)[0]
                                                           if raw else ())]
        hints = [list(box) for box in hints]
        if hints and proposals:  # a proposal on a hinted face would be scanned twice
            near = iou_matrix(proposals, hints).max(axis=1) > 0.5
            proposals = [p for p, dup in zip(proposals, near) if not dup]
        for x, y, size, _ in hints + proposals:
            pad = VERIFY_MARGIN * size
            x0, y0 = int(max(0, x - pad)), int(max(0, y - pad))
            x1, y1 = int(min(w, x + size + pad)), int(min(h, y + size + pad))
            lo = max(side, int(size * VERIFY_SIZES[0]))
            hi = max(lo, int(size * VERIFY_SIZES[1]))
            if x1 - x0 < lo or y1 - y0 < lo:  # a hint at the border: no room for a face
                continue
            # Scales about twice as dense as the one-pass scan's: twice its hits and one
            # more (a dense scan of a proposal also finds more hits on faceless texture).
            for fx, fy, fw, fh in self._scan(gray[y0:y1, x0:x1], lo, hi, scale_factor=1.1,
                                             min_neighbors=2 * self.min_neighbors + 1):
                box = (fx + x0, fy + y0, fw, fh)
                if not confirmed or iou_matrix([box], confirmed).max() < 0.3:  # neighbouring proposals
                    confirmed.append(box)
        return confirmed
