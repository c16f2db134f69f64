"""`EmotionRecognizer`: one object, one call - image in, faces with emotions out.

    from ferlab import EmotionRecognizer
    faces = EmotionRecognizer().detect_emotions("photo.jpg")   # path, PIL image or numpy array
    # [{"box": [x, y, w, h], "emotion": "happy", "probabilities": {"angry": 0.01, ...}}]

Detection comes from `detection` (YuNet by default, Haar where YuNet cannot run), the
crop around each box from the detector's crop rule (`faces.CropRule`), the classifier from `load_classifier`
(any model reference, a checkpoint, run folder or .onnx export; by default the bundled
model's int8 export on ONNX Runtime, see `shipped.default_predict_path`), decoding from
`preprocess.as_rgb_array`.

`explain(image)` adds each face's saliency map (see explain.py) and the region the
classifier saw.

Depends on: errors, classifier, detection, explain (only when explaining), faces, preprocess, shipped,
tta.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.threads import set_process_threads
from ..data.preprocess import as_rgb_array, to_gray48
from ..inference.classifier import load_classifier
from ..inference.shipped import default_predict_path, twin_checkpoint
from ..inference.tta import check_tta
from .detection import check_detector, crop_rule_of, detector_name, make_detector
from .faces import CropRule, FaceBox, crop_box, to_gray


class EmotionRecognizer:
    """Faces and their emotions in photos. `detect=False` treats each image as one face crop."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",  # auto: bf16 where the CPU/GPU has it; fp32 for exact outputs
        detect: bool = True,
        detector: Any = "auto",  # auto | yunet | haar, or a detector object (detect(gray) -> boxes)
        margin: float | None = None,  # None: the detector's crop rule; a number: its box grown by that
        tta: str | None = None,
        calibrated: bool = True,  # False: the raw scores, without the model's temperature
        min_face: float | None = None,  # smallest face sought, share of the shorter side (faces.py)
        threads: int | None = None,  # CPU threads for detection and the model, process-wide (threads.py)
    ):
        self.tta = check_tta(tta)
        if model is None:  # the shipped default: int8 on ONNX Runtime unless a device is named
            model = default_predict_path(device, precision)
        set_process_threads(threads)  # OpenCV's pool is per process (threads.py)
        self.classifier = load_classifier(model, device=device, precision=precision, calibrated=calibrated,
                                          threads=threads)
        self._calibrated = calibrated
        self._twin = None
        self.detect = detect
        if detector is None:
            detector = "auto"
        if isinstance(detector, str):
            detector = make_detector(detector, min_face) if detect else check_detector(detector)
        self.detector = detector if detect else None
        self.crop_rule = (CropRule.from_margin(margin) if margin is not None
                          else crop_rule_of(detector) if detect else None)

    @property
    def detector_name(self) -> str | None:
        """'yunet', 'haar' (or a user detector's class name); None without detection."""
        return detector_name(self.detector) if self.detector is not None else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    @property
    def can_explain(self) -> bool:
        from ..inference.classifier import TorchClassifier

        return (isinstance(self.classifier, TorchClassifier)
                or twin_checkpoint(self.classifier.path) is not None)

    @property
    def saliency_classifier(self) -> Any:
        """The PyTorch model saliency maps are taken from: the classifier itself or, for a
        shipped export (the int8 default), the checkpoint it was made from - loaded once,
        when first asked for. Anything else raises CheckpointError."""
        from ..inference.classifier import TorchClassifier, require_torch

        if isinstance(self.classifier, TorchClassifier):
            return self.classifier
        twin = twin_checkpoint(self.classifier.path)
        if twin is None:
            return require_torch(self.classifier, "saliency")
        if self._twin is None:
            self._twin = load_classifier(twin, device="cpu", calibrated=self._calibrated)
        return self._twin

    def _crops(self, crops: list[np.ndarray]) -> np.ndarray:
        size = self.classifier.preprocessing.image_size
        return np.stack([to_gray48(c, size) for c in crops])

    def _faces(self, boxes: list[FaceBox], crops: list[np.ndarray]) -> list[dict[str, Any]]:
        if not crops:
            return []
        probs = self.classifier.predict_proba(self._crops(crops), tta=self.tta)
        names = self.class_names
        return [
            {"box": b.to_list(), "emotion": names[int(p.argmax())],
             "probabilities": {n: float(v) for n, v in zip(names, p)}}
            for b, p in zip(boxes, probs)
        ]

    def _locate(self, image: Any, hints: Sequence[Sequence[int]] = ()
                ) -> tuple[np.ndarray, list[FaceBox], list[FaceBox]]:
        """(gray image, face boxes largest first, the region cropped for each)."""
        gray = to_gray(as_rgb_array(image, gray=True))  # a JPEG: its luma only, no colour decoded
        if not self.detect:
            whole = FaceBox(0, 0, gray.shape[1], gray.shape[0])
            return gray, [whole], [whole]
        # Hints only when there are some: a detector of the user's own may take the image alone.
        boxes = self.detector.detect(gray, hints) if hints else self.detector.detect(gray)
        return gray, boxes, [crop_box(gray.shape, b, self.crop_rule) for b in boxes]

    def detect_emotions(self, image: Any, hints: Sequence[Sequence[int]] = ()) -> list[dict[str, Any]]:
        """All faces in one image, largest first: box [x, y, w, h], emotion, probabilities.
        `hints`: boxes where faces were in the previous frame (FaceDetector.detect)."""
        gray, boxes, bounds = self._locate(image, hints)
        return self._faces(boxes, [gray[b.y : b.y + b.h, b.x : b.x + b.w] for b in bounds])

    def explain(self, image: Any, classes: Sequence[str] | None = None,
                method: str = "gradcam") -> list[dict[str, Any]]:
        """`detect_emotions` plus, per face, `crop` (the [x, y, w, h] the classifier saw)
        and `saliency`: {class name: map in [0, 1], the model's input size} for the
        predicted class, or for each of `classes`. Needs a PyTorch model (or a shipped
        export, whose checkpoint explains it)."""
        from ..inference.explain import check_method, saliency_maps

        method = check_method(method)
        names = self.class_names
        unknown = [c for c in classes or () if c not in names]
        if unknown:
            raise InputError(f"unknown class {', '.join(map(repr, unknown))}; this model's classes: "
                             f"{', '.join(names)}")
        gray, boxes, bounds = self._locate(image)
        crops = [gray[b.y : b.y + b.h, b.x : b.x + b.w] for b in bounds]
        faces = self._faces(boxes, crops)
        if not faces:
            return faces
        batch = self._crops(crops)
        predicted = np.array([names.index(f["emotion"]) for f in faces])
        wanted = [predicted] if not classes else [np.full(len(faces), names.index(c)) for c in classes]
        for face, b in zip(faces, bounds):
            face["crop"], face["saliency"] = b.to_list(), {}
        for targets in wanted:
            maps, _ = saliency_maps(self.saliency_classifier, batch, targets, method)
            for face, target, heat in zip(faces, targets, maps):
                face["saliency"][names[int(target)]] = heat
        return faces

    def classify_crops(self, crops: list[Any]) -> list[dict[str, Any]]:
        """Face crops (any size or colour), one result each, no detection."""
        grays = [to_gray(as_rgb_array(c)) for c in crops]
        boxes = [FaceBox(0, 0, g.shape[1], g.shape[0]) for g in grays]
        return self._faces(boxes, grays)
