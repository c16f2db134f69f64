"""`EmotionRecognizer`: one object, one call - image in, faces with emotions out.

    from ferlab import EmotionRecognizer
    faces = EmotionRecognizer().detect_emotions("photo.jpg")   # path, PIL image or numpy array
    # [{"box": [x, y, w, h], "emotion": "happy", "probabilities": {"angry": 0.01, ...}}]

Detection and cropping come from `faces`, the classifier from `load_classifier`
(any model reference: the bundled model by default, a checkpoint, run folder or
.onnx export), decoding from `preprocess.as_rgb_array`.

Depends on: classifier, faces, inference, preprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .classifier import load_classifier
from .faces import FaceBox, FaceDetector, crop_face, to_gray
from .inference import check_tta
from .preprocess import as_rgb_array, to_gray48


class EmotionRecognizer:
    """Faces and their emotions in photos. `detect=False` treats each image as one face crop."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",  # auto: bf16 where the CPU/GPU has it; fp32 for exact outputs
        detect: bool = True,
        detector: FaceDetector | None = None,
        margin: float = 0.1,
        tta: str | None = None,
        calibrated: bool = True,  # False: the raw scores, without the model's temperature
    ):
        self.tta = check_tta(tta)
        self.classifier = load_classifier(model, device, precision, calibrated)
        self.detect = detect
        self.detector = detector or (FaceDetector() if detect else None)
        self.margin = margin

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    def _faces(self, boxes: list[FaceBox], crops: list[np.ndarray]) -> list[dict[str, Any]]:
        if not crops:
            return []
        size = self.classifier.preprocessing.image_size
        batch = np.stack([to_gray48(c, size) for c in crops])
        probs = self.classifier.predict_proba(batch, self.tta)
        names = self.class_names
        return [
            {"box": b.to_list(), "emotion": names[int(p.argmax())],
             "probabilities": {n: float(v) for n, v in zip(names, p)}}
            for b, p in zip(boxes, probs)
        ]

    def detect_emotions(self, image: Any) -> list[dict[str, Any]]:
        """All faces in one image, largest first: box [x, y, w, h], emotion, probabilities."""
        gray = to_gray(as_rgb_array(image))
        if not self.detect:
            return self._faces([FaceBox(0, 0, gray.shape[1], gray.shape[0])], [gray])
        boxes = self.detector.detect(gray)
        return self._faces(boxes, [crop_face(gray, b, self.margin) for b in boxes])

    def classify_crops(self, crops: list[Any]) -> list[dict[str, Any]]:
        """Face crops (any size or colour), one result each, no detection."""
        grays = [to_gray(as_rgb_array(c)) for c in crops]
        boxes = [FaceBox(0, 0, g.shape[1], g.shape[0]) for g in grays]
        return self._faces(boxes, grays)
